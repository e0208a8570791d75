-- Checkpoints requested (max_wal_size reached, CHECKPOINT) and buffers
-- written by backends themselves, cumulative (any role; PostgreSQL 16 and
-- older: 17 moved them to pg_stat_checkpointer and pg_stat_io).
SELECT checkpoints_req, buffers_backend FROM pg_catalog.pg_stat_bgwriter
