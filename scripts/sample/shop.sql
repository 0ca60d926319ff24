-- The demo's sample database: a small web shop with the shapes real databases have (JSON, enums,
-- FKs, a partitioned event log, bytea, a table without a primary key, views, a trigger). About 60 MB.
\set ON_ERROR_STOP on
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled');
CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%');

CREATE TABLE customers (
  id bigserial PRIMARY KEY,
  email email NOT NULL UNIQUE,
  name text NOT NULL,
  profile jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz
);
COMMENT ON TABLE customers IS 'People who bought something';

CREATE TABLE products (
  id serial PRIMARY KEY,
  sku text NOT NULL UNIQUE,
  title text NOT NULL,
  price numeric(10, 2) NOT NULL CHECK (price >= 0),
  tags text[] NOT NULL DEFAULT '{}',
  thumbnail bytea
);

CREATE TABLE orders (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES customers (id),
  status order_status NOT NULL DEFAULT 'new',
  total numeric(12, 2) NOT NULL,
  placed_at timestamptz NOT NULL
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE INDEX orders_open_idx ON orders (placed_at) WHERE status IN ('new', 'paid');

CREATE TABLE order_items (
  order_id bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
  line smallint NOT NULL,
  product_id int NOT NULL REFERENCES products (id),
  quantity int NOT NULL CHECK (quantity > 0),
  PRIMARY KEY (order_id, line)
);

CREATE TABLE events (
  id bigint GENERATED ALWAYS AS IDENTITY,
  at timestamptz NOT NULL,
  kind text NOT NULL,
  payload jsonb,
  PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- An append-only audit table without a primary key, as many real schemas have.
CREATE TABLE audit_log (at timestamptz NOT NULL, actor text, action text NOT NULL);

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER customers_touch BEFORE UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE VIEW open_orders AS SELECT o.id, c.email, o.total FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status IN ('new', 'paid');
CREATE MATERIALIZED VIEW revenue_by_day AS SELECT date_trunc('day', placed_at) AS day, sum(total) AS revenue FROM orders GROUP BY 1;

INSERT INTO customers (email, name, profile, created_at)
SELECT format('user%s@example.com', g), format('Customer %s', g),
       jsonb_build_object('tier', (ARRAY['free', 'plus', 'pro'])[1 + g % 3], 'newsletter', g % 2 = 0, 'visits', g % 97),
       timestamptz '2025-01-01' + g * interval '7 minutes'
FROM generate_series(1, 50000) g;

INSERT INTO products (sku, title, price, tags, thumbnail)
SELECT format('SKU-%s', g), format('Product %s', g), (g % 500) + 0.99, ARRAY['tag' || g % 10, 'tag' || g % 7],
       decode(repeat(md5(g::text), 8), 'hex')
FROM generate_series(1, 2000) g;

INSERT INTO orders (customer_id, status, total, placed_at)
SELECT 1 + g % 50000, (ARRAY['new', 'paid', 'shipped', 'cancelled']::order_status[])[1 + g % 4], (g % 1000) + 0.5,
       timestamptz '2025-01-01' + g * interval '1 minute'
FROM generate_series(1, 200000) g;

INSERT INTO order_items (order_id, line, product_id, quantity)
SELECT o, l, 1 + (o * l) % 2000, 1 + (o + l) % 5 FROM generate_series(1, 200000) o, generate_series(1, 2) l;

INSERT INTO events (at, kind, payload)
SELECT timestamptz '2025-06-01' + g * interval '3 minutes', (ARRAY['view', 'cart', 'checkout'])[1 + g % 3],
       jsonb_build_object('session', md5(g::text), 'n', g)
FROM generate_series(1, 200000) g;

INSERT INTO audit_log SELECT timestamptz '2025-01-01' + g * interval '1 hour', 'system', 'nightly job' FROM generate_series(1, 5000) g;

REFRESH MATERIALIZED VIEW revenue_by_day;
ANALYZE;
