/** Reads a spec file (YAML, or JSON which is YAML too) and validates it before anything starts. */
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { parseSpecInput, type MigrationSpecInput, type ParsedSpec } from './spec';
import { errorMessage } from './error-text';

export interface LoadedSpec {
  /** What the operator wrote: the workflow input (references only, no secrets). */
  input: MigrationSpecInput;
  spec: ParsedSpec;
}

export function loadSpecFile(path: string): LoadedSpec {
  const input = readSpecFile(path);
  const spec = parseSpecInput(input);
  return { input: input as MigrationSpecInput, spec };
}

/** The file's content as parsed YAML/JSON, not validated yet. */
export function readSpecFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new Error(`cannot read spec file ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  try {
    return parse(text) as unknown;
  } catch (error) {
    throw new Error(`spec file ${path} is not valid YAML/JSON: ${errorMessage(error)}`);
  }
}
