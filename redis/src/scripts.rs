//! The Lua scripts that make each step atomic on the server.
//!
//! Key layout of a queue named `N` (the braces are a Redis Cluster hash
//! tag: every key of one queue lives in one slot, so scripts may touch them
//! all):
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `mulproc:{N}:meta` | hash | `magic`, `version`, `capacity`, `max_payload`, `claim_ms`; counters `live` (sent, not yet acknowledged), `sent`, `done` (`task_done` calls); `op:<consumer>` = the last non-idempotent operation of a consumer (`<seq>:<result>`), so that an operation retried after a lost connection is not done twice |
//! | `mulproc:{N}:s` | stream | messages for anyone; consumer group `g` |
//! | `mulproc:{N}:to:<id>` | stream | messages addressed to id `<id>`; consumer group `g` |
//!
//! A stream entry has the fields `r` (request code), `s` (sender id), `t`
//! (recipient id, 0 for anyone) and `d` (payload), all but `d` in decimal.
//! Acknowledged entries are trimmed from the stream's old end
//! (`XTRIM MINID ~`, whole nodes at a time: cheaper than `XDEL` of each).

/// Creates a queue: `KEYS[1]` meta, `KEYS[2]` the shared stream; `ARGV`
/// capacity, max payload, claim ms. Returns `ok`, `exists:<type of meta>`
/// or `shape:<type of the stream key>`.
pub(crate) const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 'exists:' .. redis.call('TYPE', KEYS[1])['ok']
end
local st = redis.call('TYPE', KEYS[2])['ok']
if st ~= 'none' then return 'shape:' .. st end
redis.call('HSET', KEYS[1], 'magic', 'mulproc-redis', 'version', '1',
  'capacity', ARGV[1], 'max_payload', ARGV[2], 'claim_ms', ARGV[3],
  'live', '0', 'sent', '0', 'done', '0')
redis.call('XGROUP', 'CREATE', KEYS[2], 'g', '0', 'MKSTREAM')
return 'ok'
"#;

// The pieces the two send scripts share: the queue and idempotence check
// (a retried operation returns its first result), the capacity read, the
// cut of a batch to the room left, and the counters at the end.
macro_rules! send_prelude {
    () => {
        r#"
local meta = KEYS[1]
if redis.call('TYPE', meta)['ok'] ~= 'hash' then
  return redis.error_reply('NOQUEUE no mulproc queue at ' .. meta)
end
local tag = 'op:' .. ARGV[1]
local last = redis.call('HGET', meta, tag)
if last then
  local s, c = string.match(last, '^(%d+):(%d+)$')
  if s == ARGV[2] then return tonumber(c) end
end
"#
    };
}
macro_rules! send_capacity {
    () => {
        r#"local vals = redis.call('HMGET', meta, 'capacity', 'live')
local cap = tonumber(vals[1])
if not cap then
  return redis.error_reply('NOQUEUE ' .. meta .. ' has no capacity field')
end
local live = tonumber(vals[2]) or 0
"#
    };
}
macro_rules! send_cut_to_room {
    () => {
        r#"local room = cap - live
if room < n then n = math.max(room, 0) end
"#
    };
}
macro_rules! send_epilogue {
    () => {
        r#"if n > 0 then
  redis.call('HINCRBY', meta, 'live', n)
  redis.call('HINCRBY', meta, 'sent', n)
  redis.call('HSET', meta, tag, ARGV[2] .. ':' .. n)
end
return n
"#
    };
}

/// Sends a batch: `KEYS[1]` meta, `KEYS[2..]` the target streams;
/// `ARGV[1]` consumer, `ARGV[2]` operation sequence number, then five
/// values per message: index into `KEYS`, request, sender, recipient,
/// payload. Adds as many of the messages, in order, as the capacity has
/// room for and returns how many. A retry of the same sequence number
/// returns the first call's count without adding anything.
pub(crate) const SEND: &str = concat!(
    send_prelude!(),
    r#"
for i = 2, #KEYS do
  local kt = redis.call('TYPE', KEYS[i])['ok']
  if kt ~= 'stream' and kt ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. kt .. ', not a stream')
  end
end
"#,
    send_capacity!(),
    r#"
local n = (#ARGV - 2) / 5
"#,
    send_cut_to_room!(),
    r#"
for i = 0, n - 1 do
  local b = 3 + 5 * i
  redis.call('XADD', KEYS[tonumber(ARGV[b])], '*',
    'r', ARGV[b + 1], 's', ARGV[b + 2], 't', ARGV[b + 3], 'd', ARGV[b + 4])
end
"#,
    send_epilogue!(),
);

/// [`SEND`] for a batch whose messages share one header and one stream
/// (a pool's tasks, a worker's results: the usual batch), with one
/// argument per message instead of five, which takes a third off the
/// server's time per message: `KEYS[1]` meta, `KEYS[2]` the stream;
/// `ARGV[1]` consumer, `ARGV[2]` operation sequence number, `ARGV[3..5]`
/// request, sender, recipient, then one payload per message. The entries
/// are the same as [`SEND`]'s.
pub(crate) const SEND_SAME: &str = concat!(
    send_prelude!(),
    r#"
local kt = redis.call('TYPE', KEYS[2])['ok']
if kt ~= 'stream' and kt ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' holds a ' .. kt .. ', not a stream')
end
"#,
    send_capacity!(),
    r#"
local n = #ARGV - 5
"#,
    send_cut_to_room!(),
    r#"
local key, r, s, t = KEYS[2], ARGV[3], ARGV[4], ARGV[5]
for i = 6, 5 + n do
  redis.call('XADD', key, '*', 'r', r, 's', s, 't', t, 'd', ARGV[i])
end
"#,
    send_epilogue!(),
);

/// Acknowledges entries this consumer holds: `KEYS[1]` meta, `KEYS[2]`
/// the stream; `ARGV[1]` consumer, `ARGV[2..]` entry ids in ascending
/// order. An entry that this consumer holds is acknowledged and uncounted
/// from `live`; one that another consumer holds now (it was reclaimed) is
/// left alone; one no longer pending (acknowledged already) is skipped.
/// Then the stream is trimmed (`XTRIM MINID ~`) below its oldest entry
/// still needed: the oldest pending one, or, with none pending, the last
/// one delivered (entries not yet delivered come after it). Returns
/// `{acknowledged, held by another}`.
pub(crate) const ACK: &str = r#"
local stream, me = KEYS[2], ARGV[1]
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
local owner = {}
if #ids > 1 then
  -- One look at the pending entries in the ids' range (other consumers'
  -- entries may be interleaved); those not seen are looked up one by one.
  local p = redis.call('XPENDING', stream, 'g', ids[1], ids[#ids], #ids * 4 + 64)
  for _, e in ipairs(p) do owner[e[1]] = e[2] end
end
for _, id in ipairs(ids) do
  if owner[id] == nil then
    local p = redis.call('XPENDING', stream, 'g', id, id, 1)
    if #p == 1 then owner[id] = p[1][2] end
  end
end
local mine, stolen = {}, 0
for _, id in ipairs(ids) do
  local o = owner[id]
  if o == me then mine[#mine + 1] = id elseif o then stolen = stolen + 1 end
end
local acked = 0
for i = 1, #mine, 1000 do
  acked = acked + redis.call('XACK', stream, 'g', unpack(mine, i, math.min(i + 999, #mine)))
end
if acked > 0 then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('HINCRBY', KEYS[1], 'live', -acked)
  end
  local summary = redis.call('XPENDING', stream, 'g')
  local keep = nil
  if summary[1] > 0 then
    keep = summary[2]
  else
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      local f = {}
      for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
      if f['name'] == 'g' then keep = f['last-delivered-id'] end
    end
  end
  if keep then redis.call('XTRIM', stream, 'MINID', '~', keep) end
end
return {acked, stolen}
"#;

/// Sets the idle time of entries this consumer holds: `KEYS[1]` the
/// stream; `ARGV[1]` consumer, `ARGV[2]` idle ms, `ARGV[3..]` ids. Idle 0
/// is the heartbeat (the entries are not reclaimable for another claim
/// time); a huge idle hands them back (reclaimable by anyone at once).
/// Entries another consumer holds are left alone. Returns how many were
/// touched.
pub(crate) const TOUCH: &str = r#"
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], 'g', ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], 'g', ARGV[1], 0, ARGV[i], 'IDLE', ARGV[2], 'JUSTID')
    n = n + 1
  end
end
return n
"#;

/// Counts one `task_done`: `KEYS[1]` meta; `ARGV[1]` consumer, `ARGV[2]`
/// operation sequence number. A retry of the same number counts nothing.
pub(crate) const TASK_DONE: &str = r#"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then
  return redis.error_reply('NOQUEUE no mulproc queue at ' .. KEYS[1])
end
local tag = 'op:' .. ARGV[1]
local mark = ARGV[2] .. ':d'
if redis.call('HGET', KEYS[1], tag) == mark then return 0 end
redis.call('HINCRBY', KEYS[1], 'done', 1)
redis.call('HSET', KEYS[1], tag, mark)
return 1
"#;

/// Removes a consumer that holds nothing: `KEYS[1]` meta, `KEYS[2..]` its
/// streams; `ARGV[1]` consumer. A consumer still holding entries is kept
/// (deleting it would drop them from the pending list, and they would
/// never be delivered again); live handles reclaim them after the claim
/// time.
pub(crate) const RETIRE: &str = r#"
local held = 0
for i = 2, #KEYS do
  if redis.call('TYPE', KEYS[i])['ok'] == 'stream' then
    local ok, p = pcall(redis.call, 'XPENDING', KEYS[i], 'g', '-', '+', 1, ARGV[1])
    if ok then
      if #p > 0 then
        held = held + 1
      else
        pcall(redis.call, 'XGROUP', 'DELCONSUMER', KEYS[i], 'g', ARGV[1])
      end
    end
  end
end
if held == 0 and redis.call('TYPE', KEYS[1])['ok'] == 'hash' then
  redis.call('HDEL', KEYS[1], 'op:' .. ARGV[1])
end
return held
"#;

/// Removes the consumers of a stream's group that hold nothing and have
/// not been heard of for a while (processes that died, after their
/// messages were reclaimed): `KEYS[1]` the stream; `ARGV[1]` idle ms.
/// Safe for a live one too: holding nothing, it loses nothing, and its
/// next read makes it again. Returns how many went.
pub(crate) const PRUNE: &str = r#"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'stream' then return 0 end
local ok, cs = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], 'g')
if not ok then return 0 end
local n = 0
for _, c in ipairs(cs) do
  local f = {}
  for j = 1, #c, 2 do f[c[j]] = c[j + 1] end
  if f['pending'] == 0 and tonumber(f['idle']) >= tonumber(ARGV[1]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'g', f['name'])
    n = n + 1
  end
end
return n
"#;

// ------------------------------------------------ pools with a name ---
//
// A pool named `P` (`RedisBackend::pool`) has, beside the queues of each
// run (`pool.P.<run>.tasks`, `pool.P.<run>.results`):
//
// | key | type | what |
// | --- | --- | --- |
// | `mulproc:pool:{P}:run` | string | the run whose channels are published (both exist) |
// | `mulproc:pool:{P}:alive` | string, with a TTL | the run whose parent lives: its lease, renewed by the parent |
// | `mulproc:pool:{P}:attempts:<run>` | hash | task id -> starts of the redelivered task |

/// A parent takes the pool for its run: `KEYS[1]` run, `KEYS[2]` alive;
/// `ARGV[1]` the new run, `ARGV[2]` lease ms. Returns `{'busy', run}` if
/// another run's parent holds the lease, else takes it and returns
/// `{'stale', old}` with a dead run still published (its parent died),
/// or `{'ok', ''}`.
pub(crate) const POOL_CLAIM: &str = r#"
local a = redis.call('GET', KEYS[2])
if a and a ~= ARGV[1] then return {'busy', a} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
local old = redis.call('GET', KEYS[1])
if old and old ~= ARGV[1] then return {'stale', old} end
return {'ok', ''}
"#;

/// Publishes a run whose channels exist: `KEYS[1]` run, `KEYS[2]` alive;
/// `ARGV[1]` the run. Only while its lease holds; returns 1 if published.
pub(crate) const POOL_PUBLISH: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"#;

/// Renews a parent's lease: `KEYS[1]` run, `KEYS[2]` alive; `ARGV[1]` the
/// run, `ARGV[2]` lease ms, `ARGV[3]` '1' once published. A lease that ran
/// out is taken again only if nobody else took the pool and (once
/// published) the run was not reaped meanwhile. Returns 1, or 0 if the
/// pool is no longer this run's.
pub(crate) const POOL_RENEW: &str = r#"
local a = redis.call('GET', KEYS[2])
if a == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
if a then return 0 end
if ARGV[3] == '1' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// What a worker finds: `KEYS[1]` run, `KEYS[2]` alive. Returns
/// `{'none'}`, `{'live', run}` or `{'dead', run}` (published, its lease
/// gone: its parent died).
pub(crate) const POOL_FIND: &str = r#"
local r = redis.call('GET', KEYS[1])
if not r then return {'none', ''} end
if redis.call('GET', KEYS[2]) == r then return {'live', r} end
return {'dead', r}
"#;

/// Unpublishes a run, at its end: `KEYS[1]` run, `KEYS[2]` alive,
/// `KEYS[3]` its attempts hash; `ARGV[1]` the run. Keys naming another run
/// are left alone. Returns 1.
pub(crate) const POOL_END: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('DEL', KEYS[3])
return 1
"#;
