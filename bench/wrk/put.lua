-- wrk script: PUT /buy_order with a new idempotence key per request (a UUID made of the run's
-- number, the wrk thread's and a counter), USD 10.00; counts non-200 answers. The run's number
-- is the first argument after `--` (default: the clock's seconds), so that runs one after the
-- other against the same store place new orders rather than replay the last run's. A second
-- argument stops each wrk thread after that many answers (to place a known number of orders). Used by bench/run.sh to
-- drive writes with a client as light as the one that drives the reads.
-- Globals, not locals: `thread:set` and `thread:get` reach a thread's globals only.
local threads = {}
counter = 0
id = 0
run = 0
failed = 0
answered = 0
limit = nil

function setup(thread)
  thread:set("id", #threads)
  thread:set("run", os.time() % 65536)
  table.insert(threads, thread)
end

function init(args)
  if args[1] then run = tonumber(args[1]) end
  if args[2] then limit = tonumber(args[2]) end
  wrk.method = "PUT"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local key = string.format("%08x-%04x-4000-8000-%012x", id, run % 65536, counter)
  local body = '{"currency":"USD","amount":"10.00","idempotence_key":"' .. key .. '"}'
  return wrk.format(nil, "/buy_order", nil, body)
end

function response(status, headers, body)
  if status ~= 200 then
    failed = failed + 1
  end
  answered = answered + 1
  if limit and answered >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("failed")
  end
  io.write(string.format("non-200 %d\n", total))
end
