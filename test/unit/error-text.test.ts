/** src/error-text.ts: an error's own message, its direct cause's, and the whole chain for the status. */
import { causeMessage, errorMessage, errorText, rootCause } from '../../src/error-text';

const chain = new Error('activity failed', { cause: new Error('connection refused', { cause: new Error('connection refused') }) });

test('errorMessage: the own message; anything else thrown as text', () => {
  expect(errorMessage(chain)).toBe('activity failed');
  expect(errorMessage({ message: 'error-like' })).toBe('error-like');
  expect(errorMessage('plain')).toBe('plain');
  expect(errorMessage(undefined)).toBe('undefined');
});

test("causeMessage: the direct cause's message, else the own", () => {
  expect(causeMessage(chain)).toBe('connection refused');
  expect(causeMessage(new Error('alone'))).toBe('alone');
  expect(causeMessage(42)).toBe('42');
});

test('errorText: the chain without repeats or skipped messages', () => {
  expect(errorText(chain)).toBe('activity failed: connection refused');
  expect(errorText(chain, /^activity/)).toBe('connection refused');
});

test('rootCause: the innermost error of the chain', () => {
  expect((rootCause(chain) as Error).message).toBe('connection refused');
  expect(rootCause('plain')).toBe('plain');
});
