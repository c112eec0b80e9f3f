-- wrk script for `cargo xtask bench`: at the end of a run, print wrk's figures
-- as one JSON line (latencies in microseconds), so nothing has to be parsed
-- back from wrk's rounded, unit-suffixed table.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'XTASK-BENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
    '"errors_status":%d,"errors_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
