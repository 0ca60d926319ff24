/** Kept for the workflow modules that import errorText from here; the one implementation is src/error-text.ts. */
export { errorText } from '../src/error-text';
