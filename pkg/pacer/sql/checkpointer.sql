-- Checkpoints requested, cumulative (any role; PostgreSQL 17 and newer).
SELECT num_requested FROM pg_catalog.pg_stat_checkpointer
