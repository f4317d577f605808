-- Combined DER filters. Measured with `just bench-api` at 1M DERs: a feeder + type
-- filter that matches nothing scanned all of the feeder's rows through der_feeder_idx
-- (57 ms alone, ~480 ms p50 under 32 connections); with these indexes it is an index
-- range of the exact combination (0.04 ms). Aggregators' lists always carry their
-- organization, hence the organization-led pairs.
create index der_feeder_type_idx on pm.der (feeder, der_type, id);
create index der_org_feeder_idx on pm.der (organization_id, feeder, id);
create index der_org_type_idx on pm.der (organization_id, der_type, id);
