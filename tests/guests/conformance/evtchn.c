/* Event channels (2-level ABI) and upcall masking. */
#include "conf.h"

#define EVTCHNOP_bind_virq 1
#define EVTCHNOP_close 3
#define EVTCHNOP_send 4
#define EVTCHNOP_bind_ipi 7
#define EVTCHNOP_unmask 9

static volatile int upcalls;
/* The vCPU's vcpu_info: shared_info slot 0, then the registered copy. */
static volatile struct vcpu_info *vi;
static char vcpu_info_page[4096] PAGE_ALIGNED;
static volatile u8 mask_in_handler, saved_mask, frame_if;
static volatile u64 handled[64]; /* ports the handler found pending */

static void on_event(struct regs *r)
{
	u64 *f = regs_iret(r);
	upcalls++;
	mask_in_handler = vi->evtchn_upcall_mask;
	saved_mask = (f[1] >> 32) & 0xff;
	frame_if = (f[2] >> 9) & 1;
	/* Linux's xen_evtchn_do_upcall, in short. */
	vi->evtchn_upcall_pending = 0;
	u64 sel = __atomic_exchange_n(&vi->evtchn_pending_sel, 0, __ATOMIC_SEQ_CST);
	while (sel) {
		unsigned w = __builtin_ctzl(sel);
		sel &= sel - 1;
		u64 bits = shinfo->evtchn_pending[w] & ~shinfo->evtchn_mask[w];
		handled[w] |= bits;
		__atomic_and_fetch(&shinfo->evtchn_pending[w], ~bits, __ATOMIC_SEQ_CST);
	}
}

static long evtchn_op(int cmd, void *arg)
{
	return HC2(HC_event_channel_op, cmd, arg);
}

static long send(u32 port)
{
	return evtchn_op(EVTCHNOP_send, &port);
}

static int bit(volatile const u64 *map, u32 port)
{
	return (map[port / 64] >> (port % 64)) & 1;
}

static long bind_virq(u32 virq, u32 vcpu, u32 *port)
{
	struct {
		u32 virq, vcpu, port;
	} b = { virq, vcpu, 0 };
	long rc = evtchn_op(EVTCHNOP_bind_virq, &b);
	*port = b.port;
	return rc;
}

void test_main(void)
{
	vi = &shinfo->vcpu_info[0];
	struct {
		u32 vcpu, port;
	} ipi = { 0, 0 };
	u32 port;
	long rc;

	begin("evtchn.register_callbacks");
	trap_hooks[VEC_EVENT] = on_event;
	EXPECT_EQ(register_callback(0 /* event */, 1 /* mask_events */, event_stub), 0);
	EXPECT_EQ(register_callback(1 /* failsafe */, 1, trap_stub(8)), 0);
	EXPECT_EQ(register_callback(0, 1, (void *)0x0000800000000000UL), -EINVAL); /* non-canonical */
	EXPECT_EQ(vi->evtchn_upcall_mask, 1);
	end();

	begin("evtchn.bind_ipi");
	rc = evtchn_op(EVTCHNOP_bind_ipi, &ipi);
	EXPECT_EQ(rc, 0);
	port = ipi.port;
	expect(port > 0 && port < 4096, "port %u", port);
	EXPECT_EQ(bit(shinfo->evtchn_pending, port), 0);
	end();

	begin("evtchn.send_while_masked");
	EXPECT_EQ(send(port), 0);
	HC2(HC_xen_version, 0, 0);
	EXPECT_EQ(upcalls, 0);
	EXPECT_EQ(bit(shinfo->evtchn_pending, port), 1);
	EXPECT_EQ(bit(&vi->evtchn_pending_sel, port / 64), 1);
	EXPECT_EQ(vi->evtchn_upcall_pending, 1);
	end();

	begin("evtchn.unmask_then_event_check");
	vi->evtchn_upcall_mask = 0;
	barrier();
	HC2(HC_xen_version, 0, 0); /* Linux's xen_force_evtchn_callback */
	EXPECT_EQ(upcalls, 1);
	EXPECT_EQ(bit(handled, port), 1);
	EXPECT_EQ(mask_in_handler, 1); /* delivery masks events */
	EXPECT_EQ(saved_mask, 0);
	EXPECT_EQ(frame_if, 1);
	EXPECT_EQ(vi->evtchn_upcall_mask, 0); /* the iret (IF=1) unmasked again */
	EXPECT_EQ(bit(shinfo->evtchn_pending, port), 0);
	end();

	begin("evtchn.send_unmasked_immediate");
	handled[port / 64] = 0;
	EXPECT_EQ(send(port), 0);
	EXPECT_EQ(upcalls, 2); /* delivered on the way out of the send hypercall */
	EXPECT_EQ(bit(handled, port), 1);
	end();

	begin("evtchn.port_mask_bit");
	handled[port / 64] = 0;
	__atomic_or_fetch(&shinfo->evtchn_mask[port / 64], 1UL << (port % 64), __ATOMIC_SEQ_CST);
	EXPECT_EQ(send(port), 0);
	HC2(HC_xen_version, 0, 0);
	EXPECT_EQ(upcalls, 2);
	EXPECT_EQ(bit(shinfo->evtchn_pending, port), 1);
	EXPECT_EQ(vi->evtchn_upcall_pending, 0); /* masked port: no selector, no upcall */
	EXPECT_EQ(evtchn_op(EVTCHNOP_unmask, &port), 0);
	EXPECT_EQ(upcalls, 3); /* unmask of a pending port raises the upcall */
	EXPECT_EQ(bit(handled, port), 1);
	EXPECT_EQ(bit(shinfo->evtchn_mask, port), 0);
	end();

	vi->evtchn_upcall_mask = 1;

	begin("evtchn.close_then_send");
	EXPECT_EQ(evtchn_op(EVTCHNOP_close, &port), 0);
	EXPECT_EQ(send(port), -EINVAL);
	EXPECT_EQ(bit(shinfo->evtchn_pending, port), 0);
	end();

	begin("evtchn.bind_virq_twice");
	u32 p1 = 0, p2 = 0;
	EXPECT_EQ(bind_virq(VIRQ_DEBUG, 0, &p1), 0);
	expect(p1 > 0 && p1 < 4096, "port %u", p1);
	EXPECT_EQ(bind_virq(VIRQ_DEBUG, 0, &p2), -EEXIST);
	EXPECT_EQ(send(p1), -EINVAL); /* VIRQ ports cannot be sent to */
	EXPECT_EQ(evtchn_op(EVTCHNOP_close, &p1), 0);
	EXPECT_EQ(bind_virq(VIRQ_DEBUG, 0, &p2), 0); /* free again after close */
	EXPECT_EQ(evtchn_op(EVTCHNOP_close, &p2), 0);
	end();

	begin("evtchn.bind_virq_bad_virq");
	EXPECT_EQ(bind_virq(24 /* NR_VIRQS */, 0, &p1), -EINVAL);
	end();

	begin("evtchn.bind_virq_bad_vcpu");
	rc = bind_virq(VIRQ_DEBUG, 1000, &p1);
	EXPECT_EQ(rc, -ENOENT); /* Xen: no such vCPU */
	if (rc == -EINVAL)
		/* Known monitor bug (reported): evtchn.rs bind_virq returns -EINVAL. */
		end_xfail("bind_virq to a nonexistent vCPU returns -EINVAL, Xen returns -ENOENT");
	else
		end();

	begin("evtchn.close_closed_port");
	rc = evtchn_op(EVTCHNOP_close, &p2); /* ECS_FREE since the close above */
	EXPECT_EQ(rc, -EINVAL);
	if (rc == 0)
		/* Known monitor bug (reported): evtchn.rs close() accepts a free port. */
		end_xfail("EVTCHNOP_close of a free port returns 0, Xen returns -EINVAL");
	else
		end();

	begin("evtchn.close_unallocated_port");
	u32 unused = 4000;
	rc = evtchn_op(EVTCHNOP_close, &unused);
	EXPECT_EQ(rc, -EINVAL);
	if (rc == 0)
		end_xfail("EVTCHNOP_close of a free port returns 0, Xen returns -EINVAL");
	else
		end();
	u32 zero = 0;
	begin("evtchn.close_port_0");
	EXPECT_EQ(evtchn_op(EVTCHNOP_close, &zero), -EINVAL);
	end();

	/* VCPUOP_register_vcpu_info: the per-vCPU fields move to a guest page. */
	begin("evtchn.register_vcpu_info");
	volatile struct vcpu_info *legacy = &shinfo->vcpu_info[0];
	volatile struct vcpu_info *mine = (volatile struct vcpu_info *)(vcpu_info_page + 64);
	legacy->evtchn_upcall_mask = 1;
	legacy->evtchn_upcall_pending = 0;
	struct {
		u64 mfn;
		u32 offset, rsvd;
	} reg = { va_to_mfn(vcpu_info_page), 64, 0 };
	rc = HC3(HC_vcpu_op, 10 /* VCPUOP_register_vcpu_info */, 0, &reg);
	EXPECT_EQ(rc, 0);
	if (rc == 0) {
		vi = mine;
		EXPECT_EQ(mine->evtchn_upcall_mask, 1); /* copied */
		EXPECT_EQ(mine->evtchn_upcall_pending, 1); /* Xen marks everything pending */
		EXPECT_EQ(mine->evtchn_pending_sel, ~0UL);
		EXPECT_EQ(mine->time.version & 1, 0);
		expect(mine->time.tsc_to_system_mul != 0, "no time info in the registered copy");
		ipi.vcpu = 0;
		EXPECT_EQ(evtchn_op(EVTCHNOP_bind_ipi, &ipi), 0);
		int before = upcalls;
		handled[ipi.port / 64] = 0;
		EXPECT_EQ(send(ipi.port), 0);
		EXPECT_EQ(legacy->evtchn_upcall_pending, 0); /* the old slot is not used any more */
		mine->evtchn_upcall_mask = 0;
		barrier();
		HC2(HC_xen_version, 0, 0);
		EXPECT_EQ(upcalls, before + 1);
		EXPECT_EQ(bit(handled, ipi.port), 1);
		EXPECT_EQ(mine->evtchn_upcall_mask, 0);
		mine->evtchn_upcall_mask = 1;
	}
	end();
}
