-- Renews a lease for its holder only.
-- KEYS: the lease. ARGV: holder, lifetime (ms).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end
