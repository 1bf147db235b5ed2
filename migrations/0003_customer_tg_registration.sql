-- The reverse direction (a provider calls the customer over RIPT, ript-inbound); see
-- docs/protocol.md "Calls toward a customer". Portable types only, like 0001 and 0002.

-- Customer side: our own customer TG registered with an upstream (POST {root}/customertgs).
-- customer_tg: {"hosted_tg_id","destinations"} as JSON, NULL when we register nothing;
-- customer_tg_token: the token the upstream presents to us, sealed like the other secrets.
ALTER TABLE ript_upstreams ADD COLUMN customer_tg TEXT;
ALTER TABLE ript_upstreams ADD COLUMN customer_tg_token BYTEA;
-- Runtime state, not configuration: the URI of that registration on the upstream, so that a
-- restart replaces it (PUT) instead of piling up new ones. Written without a configuration
-- version bump and outside the resource's columns.
ALTER TABLE ript_upstreams ADD COLUMN customer_tg_registration TEXT;

-- Provider side: the trust anchors (PEM) for calling the customer TGs registered with a
-- hosted TG, instead of the system roots (a customer's self-signed certificate is pinned here).
ALTER TABLE hosted_tgs ADD COLUMN customer_tg_trust_anchors_pem TEXT;
