-- tradsys history, PostgreSQL engine, version 3: a user's deposits and
-- withdrawals by time, for the wallet history endpoints. A partial index
-- (on every partition of ledger): only transfer entries are in it, so
-- trades and fees, nearly every ledger insert, pay nothing for it.
-- Queries repeat its condition verbatim so that the planner sees it
-- applies. See docs/schema.md.

CREATE INDEX ledger_transfers ON ledger (account, cause, time_ms)
    WHERE cause IN ('DEPOSIT', 'WITHDRAWAL');
