/** Quoting helpers: every identifier that reaches SQL goes through these. */
import { escapeIdentifier, escapeLiteral } from 'pg';

export const ident = (name: string): string => escapeIdentifier(name);
export const literal = (value: string): string => escapeLiteral(value);

export interface TableName {
  schema: string;
  name: string;
}

/** "schema"."table", quoted for SQL. */
export const qualified = (table: TableName): string => `${ident(table.schema)}.${ident(table.name)}`;

/** schema.table for people (status, reports); not for SQL. */
export const displayName = (table: TableName): string => `${table.schema}.${table.name}`;

/** A name as a pg_dump/psql pattern that matches exactly this object ("a"."b" with quotes doubled). */
export const exactPattern = (...parts: string[]): string => parts.map((part) => `"${part.replace(/"/g, '""')}"`).join('.');

/** Splits "schema.table" from the spec (names taken literally, no quoting). */
export function parseTableName(text: string): TableName {
  const dot = text.indexOf('.');
  return { schema: text.slice(0, dot), name: text.slice(dot + 1) };
}
