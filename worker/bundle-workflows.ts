/**
 * Bundles the workflow code into one file. The worker runs this in a short-lived child process: webpack
 * needs ~100 MB that the long-running worker would otherwise keep as resident memory.
 * Usage: node --require tsx/cjs worker/bundle-workflows.ts OUT_FILE
 */
import { writeFileSync } from 'node:fs';
import { bundleWorkflowCode } from '@temporalio/worker';

export async function bundleWorkflows(outFile: string): Promise<void> {
  const { code } = await bundleWorkflowCode({ workflowsPath: require.resolve('../workflows'), logger: undefined });
  writeFileSync(outFile, code);
}

if (require.main === module) {
  const out = process.argv[2];
  if (!out) throw new Error('usage: bundle-workflows OUT_FILE');
  bundleWorkflows(out).catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
