"""Every gateway disconnected at once, with commands pending: a dispatch event over the
whole fleet starts, and as its commands go out the relay is killed (every session
drops at the same moment) and started again; the gateways reconnect by themselves.
Every DER must end with exactly one command, applied, and each gateway must have
applied it once (a redelivered command is answered, not applied again)."""
import time
import uuid

from stack import World, log, wait_for
from telemetry import Fleet


def gateway_reconnect(args):
    gateways = 200 if args.short else 1000
    world = World("gateway-reconnect", args.build, args.workdir)
    fleet = None
    try:
        fleet = Fleet(world, gateways, 1)
        scheduler = world.service("scheduler").start()
        program = world.sql("select id from pm.program where status = 'active' limit 1")
        world.sql(f"""insert into pm.enrollment (id, program_id, der_id, organization_id, committed_kw, status)
                      select gen_random_uuid(), '{program}', d.id, d.organization_id, least(1, d.nameplate_kw), 'active'
                        from pm.der d where d.gateway_id is not null""")
        enrolled = world.scalar(f"select count(*) from pm.enrollment where program_id = '{program}' and status = 'active'")
        sim = fleet.stream(0, interval_ms=10_000)
        wait_for("every gateway online", lambda: world.scalar("select count(*) from pm.gateway where online") >= gateways, 120, 1)
        event = str(uuid.uuid4())
        world.sql(f"""insert into pm.dispatch_event (id, program_id, starts_at, ends_at, target_kw, signal, signal_value, created_by)
                      values ('{event}', '{program}', date_trunc('second', now()) + interval '10 seconds',
                              date_trunc('second', now()) + interval '20 minutes', {enrolled} * 0.8, 'curtail_kw', 0, 'chaos')""")
        commands = f"pm.der_command where event_id = '{event}' and kind <> 'release'"
        # The moment the first commands are on their way, every session goes.
        wait_for("the event's first commands", lambda: world.scalar(f"select count(*) from {commands}") > 0, 120, 0.2)
        fleet.relay.kill()
        answered = world.scalar(f"select count(*) from {commands} and status <> 'pending'")
        log(f"gateway-reconnect: {enrolled} DERs, relay killed with {answered} commands answered")
        time.sleep(2)
        fleet.relay.start()
        try:
            wait_for("every command applied",
                     lambda: world.scalar(f"select count(*) from {commands} and status = 'applied'") >= enrolled,
                     args.stall_s, 1)
        except TimeoutError:
            pass
        time.sleep(3)  # a late duplicate would show up now
        sim.send_signal(2)
        sim.wait(60)
        applied = world.scalar(f"select count(*) from {commands} and status = 'applied'")
        rows = world.scalar(f"select count(*) from {commands}")
        ders = world.scalar(f"select count(distinct der_id) from {commands}")
        summary = fleet.summary()
        passed = applied == enrolled and rows == enrolled and ders == enrolled and summary["commands"] == enrolled
        scheduler.stop()
        return "gateway-reconnect", passed, {
            "gateways": gateways, "participating": enrolled, "answered_before_kill": answered,
            "applied": applied, "command_rows": rows, "applied_at_gateways": summary["commands"],
            "connects": summary["connects"]}
    finally:
        if fleet:
            fleet.stop()
        if not args.keep:
            world.drop()
