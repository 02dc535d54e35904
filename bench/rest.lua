-- bench/rest.lua: replay pre-signed requests written by
-- `tradsys-loadgen presign`, one a line: METHOD<TAB>PATH<TAB>APIKEY<TAB>BODY.
--
-- usage: wrk -tT ... -s bench/rest.lua URL -- FILE [GROUP [T]]
--
-- Lines are taken in groups of GROUP (default 1; 2 for order pairs, so a
-- SELL and its BUY go to the same wrk thread) and the groups are dealt to
-- the threads in turn; each thread cycles through its share. The requests
-- are formatted once, in init, so replaying costs wrk no Lua work per
-- request beyond picking the next string.

local thread_count = 0

-- wrk runs setup then init for each thread in turn, so init cannot learn
-- the thread count from setup; it comes as an argument (the -t value).
function setup(thread)
   thread:set("tid", thread_count)
   thread_count = thread_count + 1
end

local requests = {}
local next_index = 0

function init(args)
   local file = assert(args[1], "usage: -- FILE [GROUP [THREADS]]")
   local group = tonumber(args[2] or "1")
   local me, n = tid or 0, tonumber(args[3] or "1")
   local line_no = 0
   for line in io.lines(file) do
      local method, path, key, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      assert(method, "bad line in " .. file .. ": " .. line)
      if math.floor(line_no / group) % n == me then
         local headers = { ["X-MBX-APIKEY"] = key }
         if body ~= "" then
            headers["Content-Type"] = "application/x-www-form-urlencoded"
         else
            body = nil
         end
         table.insert(requests, wrk.format(method, path, headers, body))
      end
      line_no = line_no + 1
   end
   assert(#requests > 0, "no requests for thread " .. me .. " in " .. file)
end

function request()
   next_index = next_index % #requests + 1
   return requests[next_index]
end
