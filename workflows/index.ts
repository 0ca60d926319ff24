/** Workflow entry points bundled by the worker. */
export { migrateDatabase } from './migrate-database';
export { migrateCluster } from './migrate-cluster';
export { cleanupMigration } from './cleanup';
export { unfreezeMigrationSource } from './unfreeze';
export { recoverMigration } from './recover';
