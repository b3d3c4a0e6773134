-- Access rules: which browser origins and which client addresses may use a token. A token's own
-- list, when set, replaces its tenant's default; null (on both) means no restriction. `inet`
-- holds networks too ('10.0.0.0/8', '2001:db8::/32').
alter table tenants
    add column allowed_domains text[],
    add column allowed_ips inet[];
alter table api_tokens
    add column allowed_domains text[],
    add column allowed_ips inet[];
