-- clock (prepended to the scripts that date what they write): Redis's clock, so that the
-- dates of one job agree whichever host wrote them.
-- now_ms() returns milliseconds since the Unix epoch as a string: fields are stored as
-- strings anyway, and formatting a Lua number (a double) is slow. tonumber() it to compare.
local function now_ms()
  local time = redis.call('TIME')
  return time[1] .. string.format('%03d', math.floor(tonumber(time[2]) / 1000))
end
