/** The problems a spec parser reports for an input (empty when it is valid); any other error is rethrown. */
import { SpecError } from '../../src/spec';

export function specProblems(parse: (input: unknown) => unknown, input: unknown): string[] {
  try {
    parse(input);
  } catch (error) {
    if (error instanceof SpecError) return error.problems;
    throw error;
  }
  return [];
}
