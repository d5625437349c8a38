-- Several instances on one database: a claimed delivery's lease belongs to the instance that
-- claimed it (HERALD_INSTANCE_ID). An instance that restarts takes back its own leases; those
-- of an instance that is gone lapse, and another instance then takes the delivery over.
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
