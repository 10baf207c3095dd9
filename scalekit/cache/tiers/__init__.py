"""Cache tiers: L1 memory, L2 Redis, L3 disk, behind one Store contract."""
