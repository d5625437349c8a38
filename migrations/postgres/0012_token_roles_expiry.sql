-- API tokens: the `reporter` role (reports rollout progress and nothing else, for the token on
-- every instance) and an optional expiry.
ALTER TABLE api_tokens DROP CONSTRAINT IF EXISTS api_tokens_role_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check
    CHECK (role IN ('admin', 'maintainer', 'reporter'));
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
