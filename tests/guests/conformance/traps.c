/* Trap bouncing: set_trap_table, Xen's bounce frame, CR2, the iret hypercall. */
#include "conf.h"

u64 t_fault_rip, t_resume_rip, t_fault_rsp;

#define MAGIC_RCX 0xc0ffee01c0ffee01UL
#define MAGIC_R11 0x0badcafe0badcafeUL
#define UNMAPPED_VA 0x0000123456789000UL

/*
 * Run `insn` (the instruction that traps, at label 1) after `pre`, with
 * rcx/r11 holding known values and the fault/resume addresses and rsp
 * recorded for the handler. rdx is an input for address operands.
 */
#define TRIGGER(pre, insn, addr)                                                       \
	__asm__ volatile(pre "\n\t"                                                    \
			     "leaq 1f(%%rip), %%rax; movq %%rax, t_fault_rip(%%rip)\n\t"   \
			     "leaq 2f(%%rip), %%rax; movq %%rax, t_resume_rip(%%rip)\n\t"  \
			     "movabs $0xc0ffee01c0ffee01, %%rcx\n\t"                     \
			     "movabs $0x0badcafe0badcafe, %%r11\n\t"                     \
			     "movq %%rsp, t_fault_rsp(%%rip)\n\t"                        \
			     "1: " insn "\n\t"                                           \
			     "2:"                                                        \
			 :                                                               \
			 : "d"(addr)                                                     \
			 : "rax", "rcx", "rsi", "r11", "memory", "cc")

struct seen {
	int hits;
	unsigned vec;
	int has_err;
	u64 err, rip, cs, rflags, rsp, ss, rcx, r11, live_rcx, live_r11, base, cr2;
	u16 live_cs;
	u8 mask;
} seen;

static void record(struct regs *r)
{
	u64 *f = regs_iret(r);
	u16 cs;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	seen.hits++;
	seen.vec = regs_vector(r);
	seen.has_err = regs_has_err(r);
	seen.err = seen.has_err ? r->w[0] : 0;
	seen.rip = f[0];
	seen.cs = f[1];
	seen.rflags = f[2];
	seen.rsp = f[3];
	seen.ss = f[4];
	seen.rcx = r->f_rcx;
	seen.r11 = r->f_r11;
	seen.live_rcx = r->rcx;
	seen.live_r11 = r->r11;
	seen.base = regs_frame_base(r);
	seen.cr2 = shinfo->vcpu_info[0].cr2;
	seen.live_cs = cs;
	seen.mask = shinfo->vcpu_info[0].evtchn_upcall_mask;
	/* Skip the trapping instruction. */
	f[0] = t_resume_rip;
}

static void reset(void)
{
	memset(&seen, 0, sizeof(seen));
}

/* Check the bounce frame of pv-boot.md 4.2 for a trap taken in kernel mode. */
static void check_frame(unsigned vec, int has_err, u64 err, u64 rip, u8 mask_before)
{
	EXPECT_EQ(seen.hits, 1);
	EXPECT_EQ(seen.vec, vec);
	EXPECT_EQ(seen.has_err, has_err);
	if (has_err)
		EXPECT_EQ(seen.err, err);
	EXPECT_EQ(seen.rip, rip);
	EXPECT_EQ(seen.cs & 0xffff, 0xe030); /* kernel mode: RPL cleared */
	EXPECT_EQ((seen.cs >> 32) & 0xff, mask_before);
	EXPECT_EQ(seen.rflags & 0x202, mask_before ? 0x002 : 0x202); /* IF = !saved mask */
	EXPECT_EQ(seen.rsp, t_fault_rsp);
	EXPECT_EQ(seen.ss & 0xffff, FLAT_KERNEL_SS);
	EXPECT_EQ(seen.rcx, MAGIC_RCX);
	EXPECT_EQ(seen.r11, MAGIC_R11);
	EXPECT_EQ(seen.live_rcx, MAGIC_RCX);
	EXPECT_EQ(seen.live_r11, MAGIC_R11);
	EXPECT_EQ(seen.base, (t_fault_rsp & ~15UL) - (has_err ? 8 : 7) * 8);
	/* The guest kernel runs in ring 3 (the selector itself is the host's
	 * choice: 0xe033 on Xen, the host's user CS on PVM-style KVM hosts). */
	EXPECT_EQ(seen.live_cs & 3, 3);
}

/*
 * Known monitor bug (reported): on PVM-style KVM hosts the host reports
 * `int $n` (n != 3, 4) as #UD at the instruction, and xenkvm bounces that
 * #UD instead of doing Xen's software-interrupt check (deliver vector n if
 * the trap_info DPL permits, else #GP((n << 3) | 2)). Only that exact
 * symptom is an expected failure.
 */
static void end_int_n(void)
{
	if (seen.hits == 1 && seen.vec == 6)
		end_xfail("int $n is delivered as #UD (host reports #UD, xenkvm does not emulate INT n)");
	else
		end();
}

static struct trap_info table[] = {
	{ 0, 0, FLAT_KERNEL_CS, 0, 0 },
	{ 3, 3, FLAT_KERNEL_CS, 0, 0 },
	{ 6, 0, FLAT_KERNEL_CS, 0, 0 },
	{ 13, 0, FLAT_KERNEL_CS, 0, 0 },
	{ 14, 0, FLAT_KERNEL_CS, 0, 0 },
	{ 0x80, 3, FLAT_KERNEL_CS, 0, 0 },
	{ 0, 0, 0, 0, 0 },
};

void test_main(void)
{
	volatile struct vcpu_info *vi = &shinfo->vcpu_info[0];
	u8 mask = vi->evtchn_upcall_mask;

	begin("traps.set_trap_table");
	for (unsigned i = 0; i < sizeof(table) / sizeof(table[0]) - 1; i++)
		table[i].address = (u64)trap_stub(table[i].vector);
	EXPECT_EQ(set_traps(table), 0);
	EXPECT_EQ(mask, 1); /* events start masked */
	end();
	for (unsigned i = 0; i < 258; i++)
		trap_hooks[i] = record;

	begin("traps.pf_read_unmapped");
	reset();
	TRIGGER("", "movq (%%rdx), %%rax", UNMAPPED_VA);
	check_frame(14, 1, 0 /* not present, read, kernel (U clear) */, t_fault_rip, mask);
	EXPECT_EQ(seen.cr2, UNMAPPED_VA);
	end();

	begin("traps.pf_write_readonly");
	reset();
	/* Store the value already there into the boot L4 (read-only, not an L1). */
	TRIGGER("movq (%%rdx), %%rsi", "movq %%rsi, (%%rdx)", si->pt_base + 8);
	check_frame(14, 1, 3 /* present, write, kernel */, t_fault_rip, mask);
	EXPECT_EQ(seen.cr2, si->pt_base + 8);
	end();

	begin("traps.ud_ud2");
	reset();
	TRIGGER("", "ud2", 0);
	check_frame(6, 0, 0, t_fault_rip, mask);
	end();

	begin("traps.gp_hlt");
	reset();
	TRIGGER("", "hlt", 0);
	check_frame(13, 1, 0, t_fault_rip, mask);
	end();

	begin("traps.de_divide");
	reset();
	TRIGGER("xor %%edx, %%edx; mov $7, %%eax; xor %%esi, %%esi", "divl %%esi", 0);
	check_frame(0, 0, 0, t_fault_rip, mask);
	end();

	begin("traps.bp_int3");
	reset();
	TRIGGER("", "int3", 0);
	check_frame(3, 0, 0, t_resume_rip /* after the int3 */, mask);
	end();

	begin("traps.int80_softint");
	reset();
	TRIGGER("", "int $0x80", 0);
	check_frame(0x80, 0, 0, t_resume_rip /* after int $0x80 */, mask);
	end_int_n();

	begin("traps.int_n_not_permitted");
	reset();
	/* Vector 0x81 has no gate the guest may use: #GP with error (0x81 << 3) | 2. */
	TRIGGER("", "int $0x81", 0);
	check_frame(13, 1, (0x81 << 3) | 2, t_fault_rip, mask);
	end_int_n();

	/* Events unmasked: IF is set in the frame, and trap_info flag 4 masks events. */
	vi->evtchn_upcall_mask = 0;
	begin("traps.frame_if_unmasked");
	reset();
	TRIGGER("", "ud2", 0);
	check_frame(6, 0, 0, t_fault_rip, 0);
	EXPECT_EQ(seen.mask, 0); /* no TBF_INTERRUPT without trap_info flag 4 */
	EXPECT_EQ(vi->evtchn_upcall_mask, 0);
	end();

	begin("traps.mask_events_flag");
	struct trap_info ud_masking[] = { { 6, 4, FLAT_KERNEL_CS, 0, (u64)trap_stub(6) },
					  { 0, 0, 0, 0, 0 } };
	EXPECT_EQ(set_traps(ud_masking), 0);
	reset();
	TRIGGER("", "ud2", 0);
	check_frame(6, 0, 0, t_fault_rip, 0);
	EXPECT_EQ(seen.mask, 1); /* masked on delivery */
	EXPECT_EQ(vi->evtchn_upcall_mask, 0); /* iret with IF=1 unmasked again */
	end();
	vi->evtchn_upcall_mask = 1;

	begin("traps.cleared_table");
	/* set_trap_table(NULL) clears all entries; re-install only #GP and #UD. */
	EXPECT_EQ(set_traps(0), 0);
	struct trap_info two[] = { { 13, 0, FLAT_KERNEL_CS, 0, (u64)trap_stub(13) },
				   { 6, 0, FLAT_KERNEL_CS, 0, (u64)trap_stub(6) },
				   { 0, 0, 0, 0, 0 } };
	EXPECT_EQ(set_traps(two), 0);
	reset();
	TRIGGER("", "ud2", 0);
	check_frame(6, 0, 0, t_fault_rip, 1);
	end();

	begin("traps.cleared_int80_gp");
	/* int $0x80 now has no gate: #GP. */
	reset();
	TRIGGER("", "int $0x80", 0);
	check_frame(13, 1, (0x80 << 3) | 2, t_fault_rip, 1);
	end_int_n();
}
