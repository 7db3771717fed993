-- +goose Up
-- GET /v1/admin/audit pages newest first by (at, id) from the previous
-- page's last entry: the index serves each page as a short range scan,
-- where the table alone would be sorted in full for every page. Built in
-- goose's transaction, so it blocks writes to audit_log while it builds;
-- the table holds one row per support action, small enough for that.
CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);
