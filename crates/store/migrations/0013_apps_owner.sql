-- `GET /v1/apps?owner=` (`verinet app ls`): an owner's apps, newest first, without a scan.
CREATE INDEX apps_owner ON apps (owner, created_at);
