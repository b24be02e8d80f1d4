-- publish: stores a module version with its bytes, all or nothing. A version is immutable:
-- when it exists already, nothing is written, so a refused upload leaves no bytes behind.
-- KEYS[1] the module's bytes (by digest); KEYS[2] the references to those bytes
-- KEYS[3] the tenant's versions of the module; KEYS[4] the tenant's module names
-- ARGV[1] the version; ARGV[2] its record (JSON); ARGV[3] the reference `tenant/name@version`
-- ARGV[4] the module's name; ARGV[5] the bytes
-- Returns false when it stored the version, or the record already stored under it.
local existing = redis.call('HGET', KEYS[3], ARGV[1])
if existing then
  return existing
end
redis.call('SET', KEYS[1], ARGV[5])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[4])
return false
