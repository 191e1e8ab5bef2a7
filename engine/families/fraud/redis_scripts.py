"""The Lua scripts :class:`engine.families.fraud.redis_state.RedisFraudState` runs inside Redis.

Kept as Python strings (nothing to package beside the module) and sent by their digest (EVALSHA); when a
restarted Redis answers NOSCRIPT, the call is sent once more with the text (EVAL), which Redis then keeps. A
script runs atomically: no other command runs between its reads and its writes, so it needs neither WATCH nor
retries.

:data:`AUTHORIZE` is one batch of authorizations. It checks that no transaction id was scored before and
that no card goes back in time, and stops there (having written nothing) if one does; otherwise, row by row
in order, it counts the terminal's transactions and frauds in each window (so a row counts the batch's
earlier rows, as :class:`~engine.families.fraud.state.FraudState` does), then records the row: the card's
packed history (the arithmetic of ``_Card.record``), the terminal's sorted set (trimmed like
``_Terminal.record``) and the transaction's label record. It answers the cards' histories as they were
before the batch and the window counts of every row; Python computes the features from them and replays the
records on its copies, so the features come from one function, :func:`engine.families.fraud.state.feature_row`.

The card update below is the one arithmetic written twice (here and in ``_Card.record``). It is additions
and subtractions only (a square is computed by Python and passed in), which IEEE 754 rounds the same in Lua
and in Python on any machine; the tests compare the packed histories the two write. Python also passes
what it can prepare cheaper than Lua (numbers packed, window bounds as text): Lua's string formatting and
packing cost a few microseconds a call, inside the one thread that serves every other request.

:data:`REPORT` records a label: it reads the transaction's record to find its terminal and time, so the
terminal's fraud set is a key it derives rather than one passed in: these scripts need one Redis server or
a primary with replicas, not Redis Cluster (the batch transaction before them needed the same).

Every write sets the key's expiry (PX / PEXPIRE) to the TTL passed in; 0 means no expiry. The TTL goes to Redis
as the argument's own text: a Lua number would be printed back to text on every call (5% of the script's
instructions under callgrind).
"""

from __future__ import annotations

__all__ = ["AUTHORIZE", "REPORT"]

AUTHORIZE = r"""
-- KEYS: nc card keys, n transaction keys, nt terminal sets, nt terminal fraud sets
-- ARGV: nc, n, nt, card span (us), ttl (ms), number of terminal windows nw, then per row: card index, terminal
--       index, sorted-set member, time (us), time packed, amount packed, its square packed, label record,
--       end of the terminal windows, their nw starts ('(' exclusive), the terminal's horizon
local nc, n, nt = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local card_span, ttl, nw = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local base = 6
local fields = (#ARGV - base) / n

for i = 1, n do
  if redis.call('EXISTS', KEYS[nc + i]) == 1 then return {'scored'} end
end

local blobs, cards, last = {}, {}, {}
for k = 1, nc do
  local blob = redis.call('GET', KEYS[k])
  blobs[k] = blob
  if blob then
    local total, squares, count, lst, m = struct.unpack('<ddi8i8i8', blob)
    cards[k] = {total = total, squares = squares, count = count, last = lst, n = m,
                times = string.sub(blob, 41, 40 + 8 * m),
                before = string.sub(blob, 41 + 8 * m, 40 + 16 * m),
                amounts = string.sub(blob, 41 + 16 * m, 40 + 24 * m)}
  else
    cards[k] = {total = 0.0, squares = 0.0, count = 0, last = -1, n = 0, times = '', before = '', amounts = ''}
  end
  last[k] = cards[k].last
end
for i = 1, n do
  local r = base + (i - 1) * fields
  local k, t = tonumber(ARGV[r + 1]), tonumber(ARGV[r + 4])
  if last[k] >= 0 and t < last[k] then return {'order', i - 1, last[k]} end
  last[k] = t
end

-- _Card.record: strings are bytes as Python packs them; numbers are doubles (times below 2^53 us are exact)
local function record(c, t, packed_time, packed_amount, packed_square)
  local amount = struct.unpack('<d', packed_amount)
  local cs = c.total + amount
  c.times = c.times .. packed_time
  c.before = c.before .. struct.pack('<d', cs - amount)
  c.amounts = c.amounts .. packed_amount
  c.total, c.squares, c.count, c.last, c.n = cs, c.squares + struct.unpack('<d', packed_square), c.count + 1, t, c.n + 1
  -- forget what left the longest window: bisect_right's count, read from the oldest end, where the one or two
  -- transactions a new one pushes out are (a bisection reads about seven times whatever it finds)
  local edge, lo = t - card_span, 0
  while lo < c.n and struct.unpack('<i8', c.times, 8 * lo + 1) <= edge do lo = lo + 1 end
  if lo > 0 then
    c.times, c.before, c.amounts = string.sub(c.times, 8 * lo + 1), string.sub(c.before, 8 * lo + 1),
      string.sub(c.amounts, 8 * lo + 1)
    c.n = c.n - lo
  end
end

local counts = {}
for i = 1, n do
  local r = base + (i - 1) * fields
  local k, j = tonumber(ARGV[r + 1]), tonumber(ARGV[r + 2])
  local tx, fr = KEYS[nc + n + j], KEYS[nc + n + nt + j]
  local stop = ARGV[r + 9]
  for w = 1, nw do
    counts[#counts + 1] = redis.call('ZCOUNT', tx, ARGV[r + 9 + w], stop)
    counts[#counts + 1] = redis.call('ZCOUNT', fr, ARGV[r + 9 + w], stop)
  end
  record(cards[k], tonumber(ARGV[r + 4]), ARGV[r + 5], ARGV[r + 6], ARGV[r + 7])
  redis.call('ZADD', tx, ARGV[r + 4], ARGV[r + 3])
  local horizon = ARGV[r + 10 + nw]
  if redis.call('ZREMRANGEBYSCORE', tx, '-inf', horizon) > 0 then
    redis.call('ZREMRANGEBYSCORE', fr, '-inf', horizon)
  end
  if ttl > 0 then
    redis.call('SET', KEYS[nc + i], ARGV[r + 8], 'PX', ARGV[5])
  else
    redis.call('SET', KEYS[nc + i], ARGV[r + 8])
  end
end

for k = 1, nc do
  local c = cards[k]
  local blob = struct.pack('<ddi8i8i8', c.total, c.squares, c.count, c.last, c.n) .. c.times .. c.before .. c.amounts
  if ttl > 0 then redis.call('SET', KEYS[k], blob, 'PX', ARGV[5]) else redis.call('SET', KEYS[k], blob) end
end
if ttl > 0 then
  for j = 1, 2 * nt do redis.call('PEXPIRE', KEYS[nc + n + j], ARGV[5]) end
end
return {'ok', blobs, counts}
"""

REPORT = r"""
-- KEYS: the transaction's label record. ARGV: terminal key prefix, sorted-set member, label, ttl (ms)
local rec = redis.call('GET', KEYS[1])
if not rec then return 'unknown' end
local terminal, when, old = string.match(rec, '^(.*)\031(%-?%d+)\031(%d)$')
local label, ttl = ARGV[3], tonumber(ARGV[4])
if old == label then return 'same' end
local frauds = ARGV[1] .. terminal .. ':fr'
if label == '1' then
  redis.call('ZADD', frauds, when, ARGV[2])
else
  redis.call('ZREM', frauds, ARGV[2])
end
local value = terminal .. '\031' .. when .. '\031' .. label
if ttl > 0 then
  redis.call('PEXPIRE', frauds, ARGV[4])
  redis.call('SET', KEYS[1], value, 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], value, 'KEEPTTL')
end
return 'ok'
"""
