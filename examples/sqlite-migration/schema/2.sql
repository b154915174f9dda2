-- ALTER TABLE ... ADD COLUMN only takes a constant default: rows from
-- before this version get 0, "unknown".
ALTER TABLE notes ADD COLUMN created INTEGER NOT NULL DEFAULT 0;
