-- wrk script: the same chat completion request for every target.
wrk.method = "POST"
wrk.body   = '{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
