-- wrk script for bench/compare.rs: every connection POSTs one file, then wrk reports what the
-- harness needs on one line of stdout.
--
--   wrk -t1 -c64 -d4s -s bench/compare/post.lua URL -- BODY_FILE CONTENT_TYPE [NAME VALUE]...
--
-- The request is formatted once per thread (in init) and reused, so the load generator's own
-- cost per request is a write and a read; no response() is defined, so wrk never hands
-- headers or bodies to Lua.

function init(args)
   local file = assert(io.open(args[1], "rb"))
   wrk.body = file:read("*a")
   file:close()
   wrk.method = "POST"
   wrk.headers["Content-Type"] = args[2]
   for i = 3, #args - 1, 2 do
      wrk.headers[args[i]] = args[i + 1]
   end
end

-- One line: `wrk-result key=value ...`. The CPU time is this process's (all threads, the
-- finished ones included) from /proc/self/stat, fields 14 and 15 in clock ticks.
function done(summary, latency, requests)
   local stat = io.open("/proc/self/stat"):read("*a")
   local fields = {}
   for field in stat:match("%) (.*)"):gmatch("%S+") do
      fields[#fields + 1] = field
   end
   local e = summary.errors
   io.write(string.format(
      "wrk-result requests=%d duration_us=%d connect=%d read=%d write=%d status=%d " ..
      "timeout=%d p50_us=%d p99_us=%d utime_ticks=%s stime_ticks=%s\n",
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50.0), latency:percentile(99.0), fields[12], fields[13]))
end
