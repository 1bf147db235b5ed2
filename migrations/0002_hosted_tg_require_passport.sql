-- Hosted TGs may refuse call creations that carry no valid PASSporT (ript-profile §8).
-- A flag: INTEGER 0/1, portable to Postgres and SQLite; existing TGs keep accepting calls
-- without one.
ALTER TABLE hosted_tgs ADD COLUMN require_passport INTEGER NOT NULL DEFAULT 0;
