/**
 * How the copy plan cuts a table (activities/copy.ts rangeCount): whole unless it is above the resume
 * size or would be the long pole of the lanes.
 */
import { rangeCount } from '../../activities/copy';

const MB = 1024 * 1024;

test('a table below the resume size and within its lane share is copied whole', () => {
  // The bench set at jobs 2: 640 MB of 1,322 MB.
  expect(rangeCount(640 * MB, 1024 * MB, 661 * MB, 2)).toBe(1);
  expect(rangeCount(200 * MB, 1024 * MB, 50 * MB, 8)).toBe(1); // below 256 MB: never split for balance
});

test('above the resume size: ranges of about that size', () => {
  expect(rangeCount(10_000 * MB, 1024 * MB, 20_000 * MB, 2)).toBe(10);
  expect(rangeCount(1100 * MB, 1024 * MB, 5000 * MB, 1)).toBe(2);
  expect(rangeCount(1_000_000 * MB, 1024 * MB, 1_000_000 * MB, 4)).toBe(64);
});

test('the long pole of the lanes is split so that the lanes stay even, at most one range per job', () => {
  // The bench set at jobs 4: 640 MB against a share of 330 MB.
  expect(rangeCount(640 * MB, 1024 * MB, 330 * MB, 4)).toBe(2);
  expect(rangeCount(900 * MB, 1024 * MB, 100 * MB, 4)).toBe(4);
  expect(rangeCount(900 * MB, 1024 * MB, 100 * MB, 1)).toBe(1);
});
