-- wrk script: POST /v1/ders with a fresh body each request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"der_type":"battery","nameplate_kw":5.0,"nameplate_kwh":13.5,"location":{"feeder":"F-03","substation":"S-0"}}'
