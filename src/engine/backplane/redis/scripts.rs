//! The Lua scripts the nodes run in Redis: each is one round trip, and
//! nothing another node does can come between its steps.
//!
//! The epoch record (`PREFIX:epoch`: `run_id`, `since`, `floor`) ties the
//! cluster's data to one run of the Redis server. Redis gives every start
//! of the server a new `run_id`, so a Redis restarted empty, or from an
//! older snapshot (whose epoch record names the run that saved it), is
//! seen by the first script that runs after it: a new epoch begins, at
//! Redis's own `TIME`. For one lease after that no index block is handed
//! out (the fence), while every live node, refreshing its lease, lifts the
//! counter above every index it holds. `floor` is the counter when the
//! first block of the epoch was handed out: a node that comes back only
//! after that knows which of its indexes may have been given again (those
//! above it).
//!
//! Scripts read keys they compute from the prefix: the cluster needs one
//! Redis server (or a primary with replicas, Sentinel's case), not Redis
//! Cluster, whose slots would split a node's keys.

/// Shared head of the scripts: the run id, the time, and the epoch,
/// begun anew when the run id differs. Sets `run_id`, `now`, `since`,
/// `floor` (-1: no block handed out in this epoch yet).
const EPOCH: &str = "
local info = redis.call('INFO', 'server')
local run_id = string.match(info, 'run_id:(%w+)') or '?'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local e = redis.call('HMGET', KEYS[1], 'run_id', 'since', 'floor')
local since = tonumber(e[2])
local floor = tonumber(e[3] or '-1')
if e[1] ~= run_id or not since then
  since = now
  floor = -1
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'run_id', run_id, 'since', now)
end
";

/// Refreshes a node's lease and lifts the counter above what it holds.
/// KEYS: epoch, index, lease, nodes, conns, names, blocks.
/// ARGV: node id, lease value, lease ms, highest index held, the blocks
/// held (`START-END`, up to two), lowest block start still in use.
/// Returns {run_id, since, now, lease existed (0/1), floor}.
pub(super) fn announce() -> String {
    format!(
        "{EPOCH}
local had = redis.call('EXISTS', KEYS[3])
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
local held = tonumber(ARGV[4])
if cur < held then redis.call('SET', KEYS[2], held) end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[4], ARGV[1])
for i = 5, 6 do
  local b = ARGV[i]
  if b ~= '' then
    redis.call('ZADD', KEYS[7], tonumber(string.match(b, '^(%d+)')), b)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. ARGV[7])
for i = 5, 7 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
return {{run_id, since, now, had, floor}}"
    )
}

/// Takes a block of indexes, unless the epoch is younger than a lease.
/// KEYS: epoch, index, blocks. ARGV: block size, lease ms.
/// Returns {last index of the block, 0}, or {0, ms left to wait}.
pub(super) fn take() -> String {
    format!(
        "{EPOCH}
local lease = tonumber(ARGV[2])
if now < since + lease then return {{0, since + lease - now}} end
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if floor < 0 then redis.call('HSET', KEYS[1], 'floor', cur) end
local last = redis.call('INCRBY', KEYS[2], ARGV[1])
local first = last - tonumber(ARGV[1]) + 1
redis.call('ZADD', KEYS[3], first, first .. '-' .. last)
redis.call('PEXPIRE', KEYS[3], lease)
return {{last, 0}}"
    )
}

/// The other live nodes, and which hold a match for a target; prunes the
/// ids whose lease is gone. KEYS: nodes, epoch. ARGV: prefix, this node's
/// id, kind (`index`, `name`, `all` or `list`), its argument.
/// Returns {now, epoch since (now if none), {{node, lease ms left, match,
/// rows in its table}...}}.
pub(super) const ROUTE: &str = "
local p = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = tonumber(redis.call('HGET', KEYS[2], 'since') or now)
local out = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if m ~= ARGV[2] then
    local ttl = redis.call('PTTL', p .. ':node:' .. m)
    if ttl == -2 then
      redis.call('SREM', KEYS[1], m)
    elseif ttl >= 0 then
      local hit = 1
      local rows = redis.call('ZCARD', p .. ':conns:' .. m)
      if ARGV[3] == 'index' then
        local i = tonumber(ARGV[4])
        hit = 0
        if redis.call('ZCOUNT', p .. ':conns:' .. m, i, i) > 0 then
          hit = 1
        else
          local b = redis.call('ZREVRANGEBYSCORE', p .. ':blocks:' .. m, i, '-inf', 'LIMIT', 0, 1)
          local last = b[1] and tonumber(string.match(b[1], '-(%d+)$'))
          if last and i <= last then hit = 1 end
        end
      elseif ARGV[3] == 'name' then
        hit = redis.call('SISMEMBER', p .. ':names:' .. m, ARGV[4])
      elseif ARGV[3] == 'all' then
        if rows > 0 then hit = 1 else hit = 0 end
      end
      table.insert(out, {m, ttl, hit, rows})
    end
  end
end
return {now, since, out}";

/// Drops the retained values of a name. KEYS: the retained hash. ARGV: the
/// name and a NUL (the start of its fields). Returns how many went.
pub(super) const FORGET_RETAINED: &str = "
local n = 0
local p = ARGV[1]
for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(k, 1, #p) == p then
    redis.call('HDEL', KEYS[1], k)
    n = n + 1
  end
end
return n";

/// Drops the listed retained values that have expired by ARGV[1] (Unix
/// ms), and only those: another node may have set one again meanwhile.
/// KEYS: the retained hash. ARGV: now, then the fields.
pub(super) const DROP_EXPIRED: &str = "
local now = tonumber(ARGV[1])
for i = 2, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    local ok, r = pcall(cjson.decode, v)
    if ok and type(r) == 'table' and type(r.expires_ms) == 'number' and r.expires_ms <= now then
      redis.call('HDEL', KEYS[1], ARGV[i])
    end
  end
end
return 0";
