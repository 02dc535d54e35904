-- wrk script: send DEPTH pipelined requests in one write.
--
-- Usage: wrk -t1 -c64 -d10s -s bench/pipeline.lua http://127.0.0.1:PORT -- [DEPTH] [PATH]
--        (defaults: DEPTH 16, PATH /api/v3/ping)
--
-- Why this counts correctly: wrk parses the buffer returned by request() once
-- at start-up (script_verify_request) and learns how many requests it holds;
-- it then expects that many responses per write and counts every parsed
-- response as one request. So "Requests/sec" is responses per second, not
-- batches per second. bench/http.sh cross-checks this against the server's
-- own request counter.
--
-- The batch is built once in init(); request() hands back the same string,
-- so the client does no per-request formatting work.

local batch

init = function(args)
   local depth = tonumber(args[1]) or 16
   local path = args[2] or "/api/v3/ping"
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format("GET", path)
   end
   batch = table.concat(r)
end

request = function()
   return batch
end
