/*
 * The iret hypercall to kernel mode, and the kernel <-> user switch: a
 * pinned user root (MMUEXT_NEW_USER_BASEPTR), iret to user mode, user
 * SYSCALL bounced to the syscall callback on the stack_switch stack, user
 * #PF with the U bit, and an iret from that callback back to kernel mode.
 */
#include "conf.h"

/* struct probe offsets used by iret_probe (below). */
struct probe {
	u64 rax, rcx, r11, rflags, flags, cs; /* frame to iret with */
	u64 exp_rsp;                          /* RSP put in the frame */
	u64 o_rax, o_rcx, o_r11, o_rflags, o_rsp; /* state seen where it landed */
};

/* iret_probe(p): iret to the next instruction with p's frame; record the result. */
__asm__(".text\n"
	"iret_probe:\n\t"
	"push %rbx; push %rbp; push %r12; push %r13; push %r14; push %r15\n\t"
	"mov %rsp, %r12\n\t"
	"mov %rdi, %rbx\n\t"
	"lea -512(%rsp), %r13\n\t"
	"and $-16, %r13\n\t"
	"mov %r13, 48(%rbx)\n\t"
	"pushq $0xe02b\n\t"	/* SS */
	"push %r13\n\t"		/* RSP */
	"pushq 24(%rbx)\n\t"	/* RFLAGS */
	"pushq 40(%rbx)\n\t"	/* CS */
	"lea 1f(%rip), %rax\n\t"
	"push %rax\n\t"		/* RIP */
	"pushq 32(%rbx)\n\t"	/* flags */
	"pushq 8(%rbx)\n\t"	/* RCX */
	"pushq 16(%rbx)\n\t"	/* R11 */
	"pushq 0(%rbx)\n\t"	/* RAX */
	"mov $23, %eax\n\t"
	"syscall\n\t"
	"ud2\n"
	"1:\n\t"
	"mov %rax, 56(%rbx)\n\t"
	"mov %rcx, 64(%rbx)\n\t"
	"mov %r11, 72(%rbx)\n\t"
	"mov %rsp, 88(%rbx)\n\t"
	"pushfq\n\t"
	"pop %rax\n\t"
	"mov %rax, 80(%rbx)\n\t"
	"mov %r12, %rsp\n\t"
	"pop %r15; pop %r14; pop %r13; pop %r12; pop %rbp; pop %rbx\n\t"
	"ret\n");
void iret_probe(struct probe *p);

#define ARITH_FLAGS 0x8d5UL /* CF PF AF ZF SF OF */

static void kernel_iret(const char *name, u64 rflags, u64 flags)
{
	struct probe p = { 0 };
	p.rax = 0xa0a0a0a0a0a0a0a0UL;
	p.rcx = 0xc0c0c0c0c0c0c0c0UL;
	p.r11 = 0x1111111111111111UL;
	p.rflags = rflags;
	p.flags = flags;
	p.cs = 0xe030; /* RPL != 3: stay in kernel mode */
	begin(name);
	iret_probe(&p);
	EXPECT_EQ(p.o_rax, p.rax);
	EXPECT_EQ(p.o_rsp, p.exp_rsp);
	EXPECT_EQ(p.o_rflags & ARITH_FLAGS, rflags & ARITH_FLAGS);
	EXPECT_EQ(p.o_rflags & 0x100, 0); /* no TF */
	if (!(flags & 0x100)) { /* VGCF_in_syscall discards RCX/R11 */
		EXPECT_EQ(p.o_rcx, p.rcx);
		EXPECT_EQ(p.o_r11, p.r11);
	}
	EXPECT_EQ(shinfo->vcpu_info[0].evtchn_upcall_mask, (rflags & 0x200) ? 0 : 1);
	/* Still in kernel mode: hypercalls work. */
	EXPECT_EQ(HC2(HC_xen_version, 0, 0), (4 << 16) | 17);
	end();
}

/*
 * The frame on a read-only page: Xen only reads it. (On hardware hosts the
 * ring-0 fast path writes the sanitised CS/SS/RFLAGS back into the frame,
 * faults, and must hand over to the monitor's slow path transparently.)
 */
static u64 ro_frame_page[512] PAGE_ALIGNED;

__asm__(".text\n"
	"iret_from:\n\t"	/* iret_from(frame): iret with the frame at rdi */
	"push %rbx; push %rbp; push %r12; push %r13; push %r14; push %r15\n\t"
	"mov %rsp, %r12\n\t"
	"mov %rdi, %rsp\n\t"
	"mov $23, %eax\n\t"
	"syscall\n\t"
	"ud2\n"
	"iret_from_landing:\n\t"
	"mov %r12, %rsp\n\t"
	"pop %r15; pop %r14; pop %r13; pop %r12; pop %rbp; pop %rbx\n\t"
	"ret\n");
void iret_from(u64 *frame);
extern char iret_from_landing[];

static void kernel_iret_readonly_frame(void)
{
	u64 *f = ro_frame_page + 256;
	u64 sp;
	begin("iret.kernel_frame_readonly");
	__asm__ volatile("mov %%rsp, %0" : "=r"(sp));
	f[0] = 0x5a5a; /* rax */
	f[1] = 0;      /* r11 */
	f[2] = 0;      /* rcx */
	f[3] = 0;      /* flags */
	f[4] = (u64)iret_from_landing;
	f[5] = 0xe030; /* kernel CS, RPL 0 */
	f[6] = 0x202;
	f[7] = (sp - 256) & ~15UL; /* below everything iret_from pushed */
	f[8] = 0xe02b;
	long rc = update_va_mapping(ro_frame_page,
				    (va_to_mfn(ro_frame_page) << 12) | _PAGE_PRESENT | _PAGE_ACCESSED,
				    UVMF_INVLPG);
	expect(rc == 0, "update_va_mapping(frame page, RO) = %ld", rc);
	iret_from(f);
	/* Still in kernel mode and the frame untouched (it is read-only). */
	EXPECT_EQ(f[5], 0xe030);
	EXPECT_EQ(HC2(HC_xen_version, 0, 0), (4 << 16) | 17);
	EXPECT_EQ(update_va_mapping(ro_frame_page,
				    (va_to_mfn(ro_frame_page) << 12) | _PAGE_PRESENT | _PAGE_RW |
					    _PAGE_ACCESSED,
				    UVMF_INVLPG),
		  0);
	end();
}

/* ---- user mode ---- */

#define USER_CODE 0x400000UL
#define USER_STACK_TOP 0x402000UL
#define USER_UNMAPPED 0x500000UL
#define USER_GS 0x403000UL /* the user GS base: a user page with a marker */
#define USER_GS_MARK 0x5553455247532121UL
#define KERNEL_GS_MARK 0x4b45524e47532121UL
/* A GDT entry whose base is USER_GS: flat DPL-3 data, base bits 31:24 0, 23:16 0x40, 15:0 0x3000. */
#define USER_GS_SEL ((10 << 3) | 3)
#define USER_GS_DESC 0x00cff3403000ffffUL
#define HC_set_gdt 2

static u64 g_gdt[512] PAGE_ALIGNED;

static u64 u_l4[512] PAGE_ALIGNED, u_l3[512] PAGE_ALIGNED, u_l2[512] PAGE_ALIGNED,
	u_l1[512] PAGE_ALIGNED;
static char u_code[4096] PAGE_ALIGNED, u_stack[4096] PAGE_ALIGNED, u_gs[4096] PAGE_ALIGNED;
/* The kernel GS base points here. */
static u64 k_gs[2] __attribute__((aligned(16))) = {KERNEL_GS_MARK, 0};

static u64 k_fs[2] __attribute__((aligned(16))) = {0x4653424153452121UL, 0};

static u64 read_fs0(void)
{
	u64 v;
	__asm__ volatile("mov %%fs:0, %0" : "=r"(v));
	return v;
}

static u64 read_gs0(void)
{
	u64 v;
	__asm__ volatile("mov %%gs:0, %0" : "=r"(v));
	return v;
}
static char k_stack[16384] __attribute__((aligned(16)));

/* The user program, copied to USER_CODE. */
__asm__(".text\n"
	"ublob:\n\t"
	"mov $1, %eax\n\t"
	"mov $0x77, %edi\n\t"
	"syscall\n"
	"ublob_after_sc1:\n\t"
	"mov $0x500000, %edx\n"
	"ublob_pf1:\n\t"
	"mov (%rdx), %rax\n"
	"ublob_pf1_end:\n\t"
	"movabs $0xffffffff80100000, %rdx\n"
	"ublob_pf2:\n\t"
	"mov (%rdx), %rax\n"
	"ublob_pf2_end:\n\t"
	"pushq $0x99\n\t" /* the user stack is writable */
	"mov %gs:0, %rsi\n\t" /* the user GS base after the first return to user mode */
	"mov $2, %eax\n\t"
	"syscall\n\t"
	"ud2\n"
	"ublob_end:\n");
extern char ublob[], ublob_after_sc1[], ublob_pf1[], ublob_pf1_end[], ublob_pf2[],
	ublob_pf2_end[], ublob_end[];
#define UVA(sym) (USER_CODE + (u64)((sym) - ublob))

/* enter_user(rip, rsp): iret to user mode; returns when the user program
 * finishes and the syscall callback irets to user_return in kernel mode. */
u64 user_ret_rsp;
__asm__(".text\n"
	"enter_user:\n\t"
	"push %rbx; push %rbp; push %r12; push %r13; push %r14; push %r15\n\t"
	"mov %rsp, user_ret_rsp(%rip)\n\t"
	"pushq $0xe02b\n\t" /* SS */
	"push %rsi\n\t"     /* RSP */
	"pushq $0x202\n\t"  /* RFLAGS: IF */
	"pushq $0xe033\n\t" /* CS: RPL 3 = user mode */
	"push %rdi\n\t"     /* RIP */
	"pushq $0\n\t"      /* flags */
	"pushq $0\n\t"      /* RCX */
	"pushq $0\n\t"      /* R11 */
	"pushq $0\n\t"      /* RAX */
	"mov $23, %eax\n\t"
	"syscall\n\t"
	"ud2\n"
	"user_return:\n\t"
	"mov user_ret_rsp(%rip), %rsp\n\t"
	"pop %r15; pop %r14; pop %r13; pop %r12; pop %rbp; pop %rbx\n\t"
	"ret\n");
void enter_user(u64 rip, u64 rsp);
extern char user_return[];

struct ustep {
	int hits;
	u64 rax, rdi, rsi, kgs, rcx, r11, err, cr2, rip, cs, rflags, rsp, ss, base;
	u8 mask;
} sc1, sc2, pf1, pf2;
static int unexpected_user_traps;

static void save(struct ustep *s, struct regs *r)
{
	u64 *f = regs_iret(r);
	s->hits++;
	s->rax = r->rax;
	s->rdi = r->rdi;
	s->rsi = r->rsi;
	s->kgs = read_gs0();
	s->rcx = r->f_rcx;
	s->r11 = r->f_r11;
	s->err = regs_has_err(r) ? r->w[0] : ~0UL;
	s->cr2 = shinfo->vcpu_info[0].cr2;
	s->rip = f[0];
	s->cs = f[1];
	s->rflags = f[2];
	s->rsp = f[3];
	s->ss = f[4];
	s->base = regs_frame_base(r);
	s->mask = shinfo->vcpu_info[0].evtchn_upcall_mask;
}

static void on_syscall(struct regs *r)
{
	u64 *f = regs_iret(r);
	if (r->rax == 1) {
		save(&sc1, r); /* back to user with the frame as is */
		return;
	}
	save(&sc2, r);
	/* Done: iret to kernel mode at user_return on the kernel stack. */
	f[0] = (u64)user_return;
	f[1] = 0xe030;
	f[2] = 0x002; /* IF clear: events masked again */
	f[3] = user_ret_rsp;
	f[4] = FLAT_KERNEL_SS;
}

static void on_pf(struct regs *r)
{
	u64 *f = regs_iret(r);
	if (f[0] == UVA(ublob_pf1)) {
		save(&pf1, r);
		f[0] = UVA(ublob_pf1_end);
	} else if (f[0] == UVA(ublob_pf2)) {
		save(&pf2, r);
		f[0] = UVA(ublob_pf2_end);
	} else {
		unexpected_user_traps++;
		printk("iret: unexpected #PF at %lx cr2 %lx\n", f[0], shinfo->vcpu_info[0].cr2);
		f[0] = (u64)user_return;
		f[1] = 0xe030;
		f[2] = 0x002;
		f[3] = user_ret_rsp;
		f[4] = FLAT_KERNEL_SS;
	}
}

static void make_ro(void *va)
{
	long rc = update_va_mapping(va, (va_to_mfn(va) << 12) | _PAGE_PRESENT | _PAGE_ACCESSED,
				    UVMF_INVLPG);
	expect(rc == 0, "update_va_mapping(%p, RO) = %ld", va, rc);
}

static void user_mode(void)
{
	const u64 kstack_top = ((u64)k_stack + sizeof(k_stack)) & ~15UL;
	const u64 tflags = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY;

	begin("iret.user_root_setup");
	memcpy(u_code, ublob, ublob_end - ublob);
	u_l4[0] = (va_to_mfn(u_l3) << 12) | tflags;
	u_l3[0] = (va_to_mfn(u_l2) << 12) | tflags;
	u_l2[(USER_CODE >> 21) & 511] = (va_to_mfn(u_l1) << 12) | tflags;
	u_l1[(USER_CODE >> 12) & 511] =
		(va_to_mfn(u_code) << 12) | _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED;
	u_l1[((USER_STACK_TOP - 1) >> 12) & 511] = (va_to_mfn(u_stack) << 12) | tflags;
	u_l1[(USER_GS >> 12) & 511] = (va_to_mfn(u_gs) << 12) | tflags;
	*(u64 *)u_gs = USER_GS_MARK;
	make_ro(u_l4);
	make_ro(u_l3);
	make_ro(u_l2);
	make_ro(u_l1);
	long rc = mmuext(MMUEXT_PIN_L4_TABLE, va_to_mfn(u_l4), 0);
	expect(rc == 0, "PIN_L4_TABLE = %ld", rc);
	rc = mmuext(MMUEXT_NEW_USER_BASEPTR, va_to_mfn(u_l4), 0);
	expect(rc == 0, "NEW_USER_BASEPTR = %ld", rc);
	rc = register_callback(2 /* syscall */, 1 /* mask events */, syscall_stub);
	expect(rc == 0, "register syscall callback = %ld", rc);
	rc = HC2(HC_stack_switch, FLAT_KERNEL_SS, kstack_top);
	expect(rc == 0, "stack_switch = %ld", rc);
	/* The user GS base comes from a GDT selector (SEGBASE_GS_USER_SEL, what
	 * Linux's load_gs_index does; twice per context switch on AMD CPUs:
	 * __USER_DS, then the null selector), after a wrong base and a null one. */
	g_gdt[USER_GS_SEL >> 3] = USER_GS_DESC;
	make_ro(g_gdt);
	u64 gdt_frame = va_to_mfn(g_gdt);
	rc = HC2(HC_set_gdt, &gdt_frame, 512);
	expect(rc == 0, "set_gdt = %ld", rc);
	rc = HC2(HC_set_segment_base, 1 /* SEGBASE_GS_USER */, USER_GS + 0x1000);
	expect(rc == 0, "set_segment_base(GS_USER) = %ld", rc);
	rc = HC2(HC_set_segment_base, 3 /* SEGBASE_GS_USER_SEL */, 0);
	expect(rc == 0, "set_segment_base(GS_USER_SEL, null) = %ld", rc);
	rc = HC2(HC_set_segment_base, 3 /* SEGBASE_GS_USER_SEL */, USER_GS_SEL);
	expect(rc == 0, "set_segment_base(GS_USER_SEL, %#x) = %ld", USER_GS_SEL, rc);
	rc = HC2(HC_set_segment_base, 2 /* SEGBASE_GS_KERNEL */, (u64)k_gs);
	expect(rc == 0, "set_segment_base(GS_KERNEL) = %ld", rc);
	int ok = !test_failed();
	end();
	if (!ok)
		return;

	trap_hooks[VEC_SYSCALL] = on_syscall;
	trap_hooks[14] = on_pf;
	enter_user(USER_CODE, USER_STACK_TOP);
	trap_hooks[14] = 0;

	begin("iret.user_syscall_frame");
	EXPECT_EQ(sc1.hits, 1);
	EXPECT_EQ(sc1.rax, 1); /* GPRs are the user's */
	EXPECT_EQ(sc1.rdi, 0x77);
	EXPECT_EQ(sc1.rip, UVA(ublob_after_sc1));
	EXPECT_EQ(sc1.rcx, UVA(ublob_after_sc1)); /* RCX/R11 as SYSCALL left them */
	EXPECT_EQ(sc1.r11 & ARITH_FLAGS, sc1.rflags & ARITH_FLAGS);
	EXPECT_EQ(sc1.cs & 0xffff, FLAT_USER_CS); /* from user mode: RPL 3 kept */
	EXPECT_EQ((sc1.cs >> 32) & 0xff, 0);      /* events were enabled in user mode */
	EXPECT_EQ(sc1.rflags & 0x200, 0x200);
	EXPECT_EQ(sc1.rsp, USER_STACK_TOP);
	EXPECT_EQ(sc1.ss & 0xffff, FLAT_USER_SS);
	EXPECT_EQ(sc1.base, kstack_top - 7 * 8); /* on the stack_switch stack */
	EXPECT_EQ(sc1.mask, 1);                  /* callback registered with mask_events */
	end();

	begin("iret.user_pf_not_present");
	EXPECT_EQ(pf1.hits, 1);
	EXPECT_EQ(pf1.err, 4); /* not present, read, user */
	EXPECT_EQ(pf1.cr2, USER_UNMAPPED);
	EXPECT_EQ(pf1.cs & 0xffff, FLAT_USER_CS);
	EXPECT_EQ(pf1.rsp, USER_STACK_TOP);
	EXPECT_EQ(pf1.base, kstack_top - 8 * 8);
	end();

	begin("iret.user_no_kernel_mappings");
	/* The user root has no kernel mappings: kernel text faults from user mode. */
	EXPECT_EQ(pf2.hits, 1);
	EXPECT_EQ(pf2.err & 5, 4);
	EXPECT_EQ(pf2.cr2, 0xffffffff80100000UL);
	end();

	begin("iret.user_to_kernel");
	EXPECT_EQ(sc2.hits, 1);
	EXPECT_EQ(sc2.rax, 2);
	EXPECT_EQ(sc2.rsp, USER_STACK_TOP - 8);
	EXPECT_EQ(*(volatile u64 *)(u_stack + 4096 - 8), 0x99);
	EXPECT_EQ(unexpected_user_traps, 0);
	/* Back in kernel mode, on the kernel root, events masked as the frame said. */
	EXPECT_EQ(shinfo->vcpu_info[0].evtchn_upcall_mask, 1);
	EXPECT_EQ(HC2(HC_xen_version, 0, 0), (4 << 16) | 17);
	EXPECT_EQ(*(volatile u64 *)&u_l4[0] & PTE_ADDR_MASK, va_to_mfn(u_l3) << 12);
	end();

	begin("iret.segment_bases");
	EXPECT_EQ(HC2(HC_set_segment_base, 0 /* SEGBASE_FS */, (u64)k_fs), 0);
	EXPECT_EQ(read_fs0(), k_fs[0]);
	EXPECT_EQ(HC2(HC_set_segment_base, 0, 0x0000800000000000UL), -EINVAL);
	EXPECT_EQ(HC2(HC_set_segment_base, 2 /* SEGBASE_GS_KERNEL */, 0x00007ffffffff000UL),
		  0);
	EXPECT_EQ(HC2(HC_set_segment_base, 7, 0), -EINVAL);
	EXPECT_EQ(HC2(HC_set_segment_base, 2, (u64)k_gs), 0);
	EXPECT_EQ(read_gs0(), KERNEL_GS_MARK);
	EXPECT_EQ(HC2(HC_set_segment_base, 0, 0), 0);
	end();

	begin("iret.user_and_kernel_gs_bases");
	/* Each mode keeps its own GS base across the switches (Xen's swapgs); the
	 * user's is the GDT descriptor's base (SEGBASE_GS_USER_SEL). */
	EXPECT_EQ(sc1.kgs, KERNEL_GS_MARK);
	EXPECT_EQ(sc2.kgs, KERNEL_GS_MARK);
	EXPECT_EQ(sc2.rsi, USER_GS_MARK);
	EXPECT_EQ(read_gs0(), KERNEL_GS_MARK);
	end();

	begin("iret.user_root_teardown");
	EXPECT_EQ(mmuext(MMUEXT_NEW_USER_BASEPTR, 0, 0), 0);
	EXPECT_EQ(mmuext(MMUEXT_UNPIN_TABLE, va_to_mfn(u_l4), 0), 0);
	/* Unpinned and unreferenced: the tables may be made writable again. */
	EXPECT_EQ(update_va_mapping(u_l4, (va_to_mfn(u_l4) << 12) | 0x63, UVMF_INVLPG), 0);
	end();
}

void test_main(void)
{
	kernel_iret("iret.kernel_regs_flags", 0x2c3 /* IF ZF SF CF */, 0);
	kernel_iret("iret.kernel_masks_events", 0x0d5 /* IF clear: mask */, 0);
	kernel_iret("iret.kernel_unmasks_events", 0xa06 /* IF OF PF */, 0);
	kernel_iret("iret.kernel_in_syscall", 0x203, 0x100 /* VGCF_in_syscall */);
	kernel_iret_readonly_frame();
	shinfo->vcpu_info[0].evtchn_upcall_mask = 1;
	user_mode();
}
