-- R's release and payment of a hold, in one script so no other command runs in between.
-- ARGV: 'release' or 'pay', reservation, customer, then for 'pay': payment id and one
-- (ticket id, code) pair per possible seat.
local function parse(rec)
  return string.match(rec, '^(%a+)|([^|]*)|(%d+)|(.*)$')
end
local function fmt(us) return string.format('%d', us) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local action, res, cust = ARGV[1], ARGV[2], ARGV[3]
local showtime = redis.call('HGET', 'bl:reservations', res)
if not showtime then return {'not_found'} end
local p = 'bl:' .. showtime
local seats_key, holds_key, cust_key = p .. ':seats', p .. ':holds', p .. ':customers'
local status, owner, expires, seats = parse(redis.call('HGET', holds_key, res))
if owner ~= cust then return {'not_found'} end
if status == 'sold' then return {'paid'} end
local live = status == 'held' and now < tonumber(expires)
if redis.call('HGET', cust_key, cust) == res then redis.call('HDEL', cust_key, cust) end

if action == 'release' then
  -- Already released or run out: the seats are free, nothing to record.
  if not live then return {'ok'} end
  for seat in string.gmatch(seats, '[^,]+') do
    if redis.call('HGET', seats_key, seat) == res then redis.call('HSET', seats_key, seat, '') end
  end
  redis.call('HSET', holds_key, res, 'released|' .. owner .. '|0|' .. seats)
  redis.call('RPUSH', p .. ':events',
    cjson.encode({e = 'released', r = res, why = 'customer', at = fmt(now)}))
  return {'ok'}
end

if not live then return {'expired'} end
local tickets, out, i = {}, {'sold'}, 0
for seat in string.gmatch(seats, '[^,]+') do
  i = i + 1
  tickets[i] = {seat = seat, id = ARGV[3 + 2 * i], code = ARGV[4 + 2 * i]}
  out[#out + 1] = seat
end
-- The seats keep pointing at the reservation; its status makes them taken for good.
redis.call('HSET', holds_key, res, 'sold|' .. owner .. '|' .. expires .. '|' .. seats)
redis.call('RPUSH', p .. ':events', cjson.encode({e = 'sold', r = res, c = owner, pay = ARGV[4],
  tickets = tickets, at = fmt(now)}))
return out
