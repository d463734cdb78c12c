-- R's hold: all or nothing, in one script so no other command runs in between.
-- ARGV: showtime, reservation, customer, hold length (µs), seat labels...
-- Holds are "status|customer|expires (µs)|seat,seat"; seats map a label to its last holder.
local function parse(rec)
  return string.match(rec, '^(%a+)|([^|]*)|(%d+)|(.*)$')
end
local function fmt(us) return string.format('%d', us) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local showtime, res, cust, hold_us = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local p = 'bl:' .. showtime
local seats_key, holds_key, cust_key = p .. ':seats', p .. ':holds', p .. ':customers'

local function live(holder)
  local rec = redis.call('HGET', holds_key, holder)
  if not rec then return false end
  local status, _, expires = parse(rec)
  return status == 'sold' or (status == 'held' and now < tonumber(expires))
end

-- The customer's earlier unpaid hold gives way to the new one.
local replaced = redis.call('HGET', cust_key, cust)
if replaced then
  local status, _, expires = parse(redis.call('HGET', holds_key, replaced))
  if not (status == 'held' and now < tonumber(expires)) then replaced = false end
end

local unknown, taken, seats = {'unknown'}, {'taken'}, {}
for i = 5, #ARGV do
  local holder = redis.call('HGET', seats_key, ARGV[i])
  seats[#seats + 1] = ARGV[i]
  if not holder then
    unknown[#unknown + 1] = ARGV[i]
  elseif holder ~= '' and holder ~= replaced and live(holder) then
    taken[#taken + 1] = ARGV[i]
  end
end
if #unknown > 1 then return unknown end
if #taken > 1 then return taken end

if replaced then
  local _, _, _, old_seats = parse(redis.call('HGET', holds_key, replaced))
  for seat in string.gmatch(old_seats, '[^,]+') do
    if redis.call('HGET', seats_key, seat) == replaced then redis.call('HSET', seats_key, seat, '') end
  end
  redis.call('HSET', holds_key, replaced, 'released|' .. cust .. '|0|' .. old_seats)
  redis.call('RPUSH', p .. ':events',
    cjson.encode({e = 'released', r = replaced, why = 'replaced', at = fmt(now)}))
end

local expires = now + hold_us
for _, seat in ipairs(seats) do redis.call('HSET', seats_key, seat, res) end
redis.call('HSET', holds_key, res, 'held|' .. cust .. '|' .. fmt(expires) .. '|' .. table.concat(seats, ','))
redis.call('HSET', cust_key, cust, res)
redis.call('HSET', 'bl:reservations', res, showtime)
redis.call('RPUSH', p .. ':events', cjson.encode({e = 'held', r = res, c = cust, seats = seats,
  at = fmt(now), exp = fmt(expires)}))
return {'held', fmt(now), fmt(expires)}
