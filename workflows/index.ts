/** Workflow entry points bundled by the worker. */
export { migrateDatabase } from './migrate-database';
export { cleanupMigration } from './cleanup';
