/* PV time and timers: vcpu_time_info, VIRQ_TIMER, single-shot and periodic timers, block. */
#include "conf.h"

#define EVTCHNOP_bind_virq 1
#define EVTCHNOP_send 4
#define EVTCHNOP_bind_ipi 7
#define VCPUOP_set_periodic_timer 6
#define VCPUOP_stop_periodic_timer 7
#define VCPUOP_set_singleshot_timer 8
#define VCPUOP_stop_singleshot_timer 9
#define VCPU_SSHOTTMR_future 1
#define SCHEDOP_block 1
#define HC_set_timer_op 15
#define MS 1000000UL

static u32 timer_port;
static volatile int upcalls, timer_hits;
static volatile u64 timer_seen_at; /* system time when the handler first saw it */
static volatile u64 handled[64];

static void on_event(struct regs *r)
{
	volatile struct vcpu_info *vi = &shinfo->vcpu_info[0];
	upcalls++;
	vi->evtchn_upcall_pending = 0;
	u64 sel = __atomic_exchange_n(&vi->evtchn_pending_sel, 0, __ATOMIC_SEQ_CST);
	while (sel) {
		unsigned w = __builtin_ctzl(sel);
		sel &= sel - 1;
		u64 bits = shinfo->evtchn_pending[w] & ~shinfo->evtchn_mask[w];
		handled[w] |= bits;
		__atomic_and_fetch(&shinfo->evtchn_pending[w], ~bits, __ATOMIC_SEQ_CST);
		if (timer_port / 64 == w && (bits >> (timer_port % 64)) & 1) {
			if (!timer_hits)
				timer_seen_at = now_ns();
			timer_hits++;
		}
	}
}

static long singleshot(u64 deadline, u32 flags)
{
	struct {
		u64 timeout_abs_ns;
		u32 flags;
		u32 pad;
	} t = { deadline, flags, 0 };
	return HC3(HC_vcpu_op, VCPUOP_set_singleshot_timer, 0, &t);
}

/* Block (events masked first, as Linux's idle loop does) until the timer fired or `limit` blocks. */
static int block_until_timer(int limit)
{
	int n = 0;
	while (!timer_hits && n < limit) {
		shinfo->vcpu_info[0].evtchn_upcall_mask = 1;
		barrier();
		HC2(HC_sched_op, SCHEDOP_block, 0);
		n++;
	}
	shinfo->vcpu_info[0].evtchn_upcall_mask = 1;
	return n;
}

static void reset(void)
{
	timer_hits = 0;
	timer_seen_at = 0;
}

/* Busy-wait `ns` with events enabled, forcing event checks. */
static void spin(u64 ns)
{
	u64 end = now_ns() + ns;
	shinfo->vcpu_info[0].evtchn_upcall_mask = 0;
	while (now_ns() < end)
		HC2(HC_xen_version, 0, 0);
	shinfo->vcpu_info[0].evtchn_upcall_mask = 1;
}

void test_main(void)
{
	volatile struct vcpu_time_info *t = &shinfo->vcpu_info[0].time;
	u64 t0, t1, deadline;
	long rc;

	begin("timer.time_info");
	EXPECT_EQ(t->version & 1, 0);
	expect(t->tsc_to_system_mul != 0, "tsc_to_system_mul is 0");
	t0 = now_ns();
	t1 = now_ns();
	expect(t1 >= t0, "system time went backwards: %lu then %lu", t0, t1);
	expect(shinfo->wc_sec > 1500000000U, "wallclock wc_sec = %u", shinfo->wc_sec);
	EXPECT_EQ(shinfo->wc_version & 1, 0);
	end();

	begin("timer.bind_virq_timer");
	struct {
		u32 virq, vcpu, port;
	} b = { VIRQ_TIMER, 0, 0 };
	rc = HC2(HC_event_channel_op, EVTCHNOP_bind_virq, &b);
	EXPECT_EQ(rc, 0);
	timer_port = b.port;
	expect(timer_port > 0 && timer_port < 4096, "port %u", timer_port);
	trap_hooks[VEC_EVENT] = on_event;
	EXPECT_EQ(register_callback(0, 1, event_stub), 0);
	/* Xen starts PV vCPUs with a 10 ms periodic timer; Linux stops it first. */
	EXPECT_EQ(HC3(HC_vcpu_op, VCPUOP_stop_periodic_timer, 0, 0), 0);
	end();

	begin("timer.singleshot_5ms");
	reset();
	deadline = now_ns() + 5 * MS;
	EXPECT_EQ(singleshot(deadline, 0), 0);
	int blocks = block_until_timer(1000);
	t1 = now_ns();
	EXPECT_EQ(timer_hits, 1);
	expect(timer_seen_at >= deadline, "timer seen %ld ns before its deadline",
	       (s64)(deadline - timer_seen_at));
	expect(t1 - deadline < 1000 * MS, "woke %lu ns after the deadline", t1 - deadline);
	expect(blocks >= 1 && blocks <= 3, "%d blocks to see one timer", blocks);
	end();

	begin("timer.singleshot_past_fires_at_once");
	reset();
	t0 = now_ns();
	EXPECT_EQ(singleshot(t0 - 1 * MS, 0), 0);
	block_until_timer(1000);
	t1 = now_ns();
	EXPECT_EQ(timer_hits, 1);
	expect(t1 - t0 < 100 * MS, "past deadline took %lu ns to fire", t1 - t0);
	end();

	begin("timer.singleshot_future_flag");
	reset();
	EXPECT_EQ(singleshot(now_ns() - 1 * MS, VCPU_SSHOTTMR_future), -ETIME);
	EXPECT_EQ(singleshot(now_ns() + 1000 * MS, VCPU_SSHOTTMR_future), 0);
	EXPECT_EQ(HC3(HC_vcpu_op, VCPUOP_stop_singleshot_timer, 0, 0), 0);
	end();

	/*
	 * Reprogramming replaces the deadline, later or earlier, and a timer
	 * fires while the vCPU computes without making a single hypercall (on
	 * hardware hosts these deadlines are set in ring 0 without an exit:
	 * the monitor's timer thread must still see them).
	 */
	begin("timer.singleshot_reprogrammed_later");
	reset();
	EXPECT_EQ(singleshot(now_ns() + 5 * MS, 0), 0);
	deadline = now_ns() + 60 * MS;
	EXPECT_EQ(singleshot(deadline, 0), 0);
	spin(30 * MS);
	EXPECT_EQ(timer_hits, 0);
	block_until_timer(1000);
	EXPECT_EQ(timer_hits, 1);
	expect(timer_seen_at >= deadline, "timer seen %ld ns before its deadline",
	       (s64)(deadline - timer_seen_at));
	end();

	begin("timer.singleshot_reprogrammed_earlier");
	reset();
	t0 = now_ns();
	EXPECT_EQ(singleshot(t0 + 2000 * MS, 0), 0);
	EXPECT_EQ(singleshot(t0 + 5 * MS, 0), 0);
	block_until_timer(1000);
	EXPECT_EQ(timer_hits, 1);
	expect(now_ns() - t0 < 1000 * MS, "fired %lu ns after it was set", now_ns() - t0);
	end();

	begin("timer.singleshot_fires_without_hypercalls");
	reset();
	t0 = now_ns();
	EXPECT_EQ(singleshot(t0 + 5 * MS, 0), 0);
	shinfo->vcpu_info[0].evtchn_upcall_mask = 0;
	barrier();
	while (!timer_hits && now_ns() - t0 < 3000 * MS)
		barrier();
	shinfo->vcpu_info[0].evtchn_upcall_mask = 1;
	EXPECT_EQ(timer_hits, 1);
	end();

	begin("timer.singleshot_efault");
	EXPECT_EQ(HC3(HC_vcpu_op, VCPUOP_set_singleshot_timer, 0, 0x10), -EFAULT);
	EXPECT_EQ(HC3(HC_vcpu_op, VCPUOP_set_singleshot_timer, 0, 0xffff808000000000UL), -EFAULT);
	end();

	begin("timer.stop_singleshot");
	reset();
	EXPECT_EQ(singleshot(now_ns() + 10 * MS, 0), 0);
	EXPECT_EQ(HC3(HC_vcpu_op, VCPUOP_stop_singleshot_timer, 0, 0), 0);
	spin(40 * MS);
	EXPECT_EQ(timer_hits, 0);
	end();

	begin("timer.set_timer_op");
	reset();
	deadline = now_ns() + 5 * MS;
	EXPECT_EQ(HC1(HC_set_timer_op, deadline), 0);
	block_until_timer(1000);
	EXPECT_EQ(timer_hits, 1);
	expect(timer_seen_at >= deadline, "timer seen %ld ns before its deadline",
	       (s64)(deadline - timer_seen_at));
	end();

	begin("timer.block_with_pending_event");
	struct {
		u32 vcpu, port;
	} ipi = { 0, 0 };
	EXPECT_EQ(HC2(HC_event_channel_op, EVTCHNOP_bind_ipi, &ipi), 0);
	int before = upcalls;
	shinfo->vcpu_info[0].evtchn_upcall_mask = 1;
	EXPECT_EQ(HC2(HC_event_channel_op, EVTCHNOP_send, &ipi.port), 0);
	t0 = now_ns();
	EXPECT_EQ(HC2(HC_sched_op, SCHEDOP_block, 0), 0); /* unmasks; returns at once */
	t1 = now_ns();
	EXPECT_EQ(upcalls, before + 1);
	EXPECT_EQ((handled[ipi.port / 64] >> (ipi.port % 64)) & 1, 1);
	expect(t1 - t0 < 100 * MS, "block with a pending event took %lu ns", t1 - t0);
	shinfo->vcpu_info[0].evtchn_upcall_mask = 1;
	end();

	begin("timer.periodic");
	reset();
	struct {
		u64 period_ns;
	} per = { 10 * MS };
	t0 = now_ns();
	EXPECT_EQ(HC3(HC_vcpu_op, VCPUOP_set_periodic_timer, 0, &per), 0);
	u64 limit = t0 + 1000 * MS;
	/* Spin rather than block: with no tick at all, block would never return. */
	shinfo->vcpu_info[0].evtchn_upcall_mask = 0;
	while (timer_hits < 3 && now_ns() < limit)
		HC2(HC_xen_version, 0, 0);
	t1 = now_ns();
	EXPECT_EQ(HC3(HC_vcpu_op, VCPUOP_stop_periodic_timer, 0, 0), 0);
	shinfo->vcpu_info[0].evtchn_upcall_mask = 1;
	expect(timer_hits >= 3, "%d periodic ticks in %lu ns", timer_hits, t1 - t0);
	expect(t1 - t0 >= 25 * MS, "3 ticks of a 10 ms period after %lu ns", t1 - t0);
	if (timer_hits == 0)
		/* Known monitor bug (reported): VCPUOP_set_periodic_timer only records the period. */
		end_xfail("VCPUOP_set_periodic_timer does not start a periodic VIRQ_TIMER");
	else
		end();
	/* Nothing more arrives once stopped. */
	begin("timer.periodic_stopped");
	reset();
	spin(30 * MS);
	EXPECT_EQ(timer_hits, 0);
	end();
}
