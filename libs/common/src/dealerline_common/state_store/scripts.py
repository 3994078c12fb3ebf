"""The Redis store's server-side steps (Lua): each is one round trip and atomic, which keeps
an optimistic write short when fifty writers race on one session.

Every session script is called with the session's keys as KEYS, in :meth:`SessionKeys.all`
order (state, notifications, delivered, tasks index, replies index, then the write lease
and its baton list, which keep their own short TTL), and ARGV[1] the TTL in ms, ARGV[2] the
task-record prefix, ARGV[3] the reply-log prefix; its own arguments follow from ARGV[4]. The
records the two indexes name are touched without being declared in KEYS: they share the
session's hash tag, hence its Cluster slot.

Under contention a writer that lost a race takes the session's write lease (a token with a
short TTL) and waits for it by BLPOP on the baton list, which each release feeds (one
entry wakes one waiter, in the order they blocked); while a lease is held, only its holder's
compare-and-set may write. Nobody waits for a lease that outlives a crashed holder: it
expires, and waiters block no longer than its remaining TTL.
"""

from __future__ import annotations

from .keys import SessionKeys

__all__ = [
    "ACQUIRE_LUA",
    "DELETE_LUA",
    "READ_LUA",
    "RELEASE_LUA",
    "REFRESH_LUA",
    "SET_IF_VERSION_LUA",
    "SYNC_READ_LUA",
    "WINDOW_LUA",
    "session_args",
]

_PRELUDE = """
local function each_record(fn)
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do fn(ARGV[2] .. id) end
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do fn(ARGV[3] .. id) end
end
local function refresh()
  for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
  each_record(function(key) redis.call('PEXPIRE', key, ARGV[1]) end)
end
local function leased_by_other(token)
  local holder = redis.call('GET', KEYS[6])
  return holder and holder ~= token
end
local function release(token, baton_ms)
  if redis.call('GET', KEYS[6]) ~= token then return 0 end
  redis.call('DEL', KEYS[6])
  if redis.call('LLEN', KEYS[7]) == 0 then redis.call('RPUSH', KEYS[7], 1) end
  redis.call('PEXPIRE', KEYS[7], baton_ms)
  return 1
end
"""

# Every key of the session gets a fresh TTL (queued inside a write's MULTI).
REFRESH_LUA = _PRELUDE + "refresh() return 1"

# The optimistic write: ARGV[4] the new document, ARGV[5] the version it replaces (0: none),
# ARGV[6] the writer's lease token ('' none), ARGV[7] the baton's TTL in ms, ARGV[8..]
# notification ids to record as delivered with it. Returns 1 written (the lease, if it was
# the writer's, released) or already there (an earlier attempt whose reply was lost; the
# payload's updated_at makes it unique), 0 the stored version differs or another writer
# holds the lease, -1 the stored document has no numeric version.
SET_IF_VERSION_LUA = (
    _PRELUDE
    + """
local raw = redis.call('GET', KEYS[1])
if raw == ARGV[4] then return 1 end
if leased_by_other(ARGV[6]) then return 0 end
local version = 0
if raw then
  local ok, doc = pcall(cjson.decode, raw)
  if not ok or type(doc) ~= 'table' or type(doc['version']) ~= 'number' then return -1 end
  version = doc['version']
end
if version ~= tonumber(ARGV[5]) then return 0 end
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[1])
for i = 8, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
refresh()
if ARGV[6] ~= '' then release(ARGV[6], ARGV[7]) end
return 1
"""
)

# The document for an update: {document or nil, 1 if another writer holds the lease}.
# ARGV[4] the reader's lease token ('' none).
READ_LUA = (
    _PRELUDE
    + """
return {redis.call('GET', KEYS[1]), leased_by_other(ARGV[4]) and 1 or 0}
"""
)

# One consistent snapshot of what a sync merges: {document or nil, 1 if another writer
# holds the lease, notifications, delivered ids, task records (nil for one indexed but
# gone)}. ARGV[4] the reader's lease token ('' none).
SYNC_READ_LUA = (
    _PRELUDE
    + """
local tasks = {}
for i, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  tasks[i] = redis.call('GET', ARGV[2] .. id)
end
return {redis.call('GET', KEYS[1]), leased_by_other(ARGV[4]) and 1 or 0,
        redis.call('LRANGE', KEYS[2], 0, -1), redis.call('SMEMBERS', KEYS[3]), tasks}
"""
)

# Take (or keep) the write lease: ARGV[4] the token, ARGV[5] the lease in ms. Returns 0 if
# the caller holds it now, else the ms the current holder's lease still has.
ACQUIRE_LUA = (
    _PRELUDE
    + """
if redis.call('SET', KEYS[6], ARGV[4], 'NX', 'PX', ARGV[5]) then return 0 end
if redis.call('GET', KEYS[6]) == ARGV[4] then
  redis.call('PEXPIRE', KEYS[6], ARGV[5])
  return 0
end
return math.max(1, redis.call('PTTL', KEYS[6]))
"""
)

# Give the lease back (if still the caller's) and wake one waiter: ARGV[4] the token,
# ARGV[5] the baton's TTL in ms. Returns 1 if it was the caller's.
RELEASE_LUA = _PRELUDE + "return release(ARGV[4], ARGV[5])"

# Every key of the session, records included, at once (nothing recorded meanwhile is left).
DELETE_LUA = (
    _PRELUDE
    + """
local n = 0
each_record(function(key) n = n + redis.call('DEL', key) end)
for _, key in ipairs(KEYS) do n = n + redis.call('DEL', key) end
return n
"""
)

# A counter of events within a rolling window (count_in_window): a sorted set of event ids
# scored by the Redis server's own clock in milliseconds (one clock for every replica).
# KEYS[1] the set; ARGV: window in ms, the event id ('' none), the limit ('' none).
# Returns {events within the window, 1 if the event is among them}.
WINDOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local counted = 0
if ARGV[2] ~= '' then
  if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
    counted = 1
  elseif ARGV[3] == '' or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[1], now, ARGV[2])
    redis.call('PEXPIRE', KEYS[1], window)
    counted = 1
  end
end
return {redis.call('ZCARD', KEYS[1]), counted}
"""


def session_args(keys: SessionKeys, ttl_ms: int, *extra: str | int) -> tuple[int, list[str | int]]:
    """``numkeys`` and ``KEYS..., ARGV...`` for a session script (see the module's
    docstring)."""
    every = keys.all
    return len(every), [*every, ttl_ms, keys.task_prefix, keys.reply_prefix, *extra]
