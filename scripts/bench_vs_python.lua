-- wrk script of scripts/bench_vs_python.py: POST the JSON body in the file named by $BENCH_BODY
-- on every request, then print one line "BENCH_JSON {...}" with the totals, the error counts
-- (a non-2xx answer counts in "status") and latency percentiles in microseconds, taken from
-- the same histogram `wrk --latency` prints.
local path = os.getenv("BENCH_BODY")
local f = assert(io.open(path, "rb"), "BENCH_BODY: cannot open " .. tostring(path))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,"read":%.0f,' ..
      '"write":%.0f,"status":%.0f,"timeout":%.0f,"mean_us":%.1f,"max_us":%.0f,"p50_us":%.0f,' ..
      '"p75_us":%.0f,"p90_us":%.0f,"p99_us":%.0f}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
      e.timeout, latency.mean, latency.max, latency:percentile(50), latency:percentile(75),
      latency:percentile(90), latency:percentile(99)))
end
