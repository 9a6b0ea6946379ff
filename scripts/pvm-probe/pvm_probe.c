/*
 * pvm_probe: what does this host's /dev/kvm offer of the PVM ABI
 * (virt-pvm "Pagetable-based Virtual Machine", Documentation/virt/kvm/x86/
 * pvm-spec.rst), and what do its mode switches cost?
 *
 * Throwaway research probe for docs/pvm-supervisor.md (issue 11). Not part of
 * xenkvm. Build and run (root, /dev/kvm):
 *
 *     gcc -O2 -Wall -o /tmp/pvm_probe scripts/pvm-probe/pvm_probe.c
 *     /tmp/pvm_probe [iterations]
 *
 * It prints, in order:
 *   1. KVM capabilities that matter for a Xen PV monitor (XEN_HVM,
 *      EXIT_HYPERCALL, SYNC_REGS, HYPERV), the KVM_GET_SUPPORTED_CPUID
 *      hypervisor leaves 0x40000000.. (a PVM host answers "pvm" in EBX of
 *      0x40000002) and the PVM MSRs found in KVM_GET_MSR_INDEX_LIST;
 *   2. for each PVM MSR 0x4b564df0..6 (current and v1 numbering): whether
 *      KVM_GET_MSRS/KVM_SET_MSRS (host-initiated) accept it on a fresh vCPU;
 *   3. a user-mode SYSCALL with MSR_PVM_VCPU_STRUCT (PVCS) set: does it enter
 *      supervisor mode at LSTAR and fill the PVCS (and which PVCS layout)?
 *   4. from guest ring 0: WRMSR of MSR_PVM_VCPU_STRUCT and PVM_SYNTHETIC_CPUID;
 *   5. ring-3 code run from VAs in upper-half L4 slots (which slots the host
 *      keeps for itself);
 *   6. timed loops (best of 5 runs of N iterations, wall clock and guest TSC):
 *      - pvm-syscall-eretu, pvm-ud2-bounce: the PVM user->supervisor->user
 *        switches (SYSCALL into LSTAR, #UD into MSR_PVM_EVENT_ENTRY, back by
 *        ERETU = the SYSCALL at MSR_PVM_RETU_RIP); only where 3. succeeded;
 *      - ring3-dec-jnz, ring0-dec-jnz, ring0-mov-cr3: the same two-instruction
 *        loop in ring 3 and ring 0, and a privileged instruction in ring 0;
 *      - ring0-syscall: SYSCALL in ring 0 with RAX = 29 (Xen's sched_op):
 *        a PVM hypercall (returns in place) or an x86 SYSCALL (to LSTAR)?
 *      - x86-ud2-idt-iretq, x86-int80-iretq: ring 3 -> IDT gate -> ring 0
 *        handler (add + iretq, or iretq) -> ring 3;
 *      - x86-syscall-lstar: ring-3 SYSCALL into an LSTAR on a user page that
 *        jumps back (where SYSCALL stays in ring 3);
 *      - ring0-out-exit: an `out` from ring 0, i.e. KVM_RUN -> exit to this
 *        process -> KVM_RUN;
 *      - ioctl KVM_GET_REGS: one vCPU ioctl.
 *
 * Guest code is the assembly block below (our own), copied into guest memory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_FMASK 0xc0000084
#define MSR_PVM_BASE 0x4b564df0
static const char *pvm_msr_name[] = {
	"LINEAR_ADDRESS_RANGE", "VCPU_STRUCT", "SWITCH_CR3(v1)",
	"SUPERVISOR_RSP(v1)", "EVENT_ENTRY", "RETU_RIP", "RETS_RIP(v1)",
};
#define MSR_PVM_LINEAR_ADDRESS_RANGE 0x4b564df0
#define MSR_PVM_VCPU_STRUCT 0x4b564df1
#define MSR_PVM_EVENT_ENTRY 0x4b564df4
#define MSR_PVM_RETU_RIP 0x4b564df5

/* Guest physical = guest virtual layout (identity, lower half). */
#define MEM_SIZE (4u << 20)
#define PML4 0x1000
#define PDPT 0x2000
#define PD 0x3000
#define PT 0x4000
#define SMOD_CODE 0x10000 /* supervisor pages: U=0 */
#define USER_CODE 0x11000 /* user pages: U=1 */
#define PVCS 0x12000
#define SMOD_STACK_TOP 0x17000
#define USER_STACK_TOP 0x1a000
#define SDATA 0x1b000 /* [0] = &PVCS.rip, [8] = &PVCS.event_vector */
#define IDT 0x5000
#define GDT 0x6000
#define TSS 0x7000
#define USER_PAGE(a) ((a) == USER_CODE || ((a) >= 0x18000 && (a) < 0x1a000))

#define PORT_DONE 0x10	   /* a user loop finished: r13 = TSC delta */
#define PORT_EVENT 0x11	   /* an unexpected event reached EVENT_ENTRY */
#define PORT_SEVENT 0x12   /* an event in supervisor mode (ENTRY+512) */
#define PORT_LOOP 0x13	   /* ring0-out-exit loop */
#define PORT_SDONE 0x14	   /* a supervisor loop finished: r13, rax */
#define PORT_LAYOUT 0x15   /* layout probe arrived at LSTAR */
#define PORT_WRMSR 0x31	   /* guest wrmsr/rdmsr of PVM MSRs did not fault */
#define PORT_CPUID 0x32	   /* synthetic CPUID done */
#define PORT_FAULT 0x30	   /* ring-0 IDT: some other vector */
#define PORT_GP 0x3d	   /* ring-0 IDT: #GP */
#define PORT_PF 0x3e	   /* ring-0 IDT: #PF */

/* Guest code. Labels are offsets into one blob; smod part first, user part
 * at g_user (page aligned), copied to SMOD_CODE and USER_CODE. */
__asm__(".pushsection .rodata.guest,\"a\"\n"
	".balign 4096\n"
	".globl g_smod\n g_smod:\n"
	/* ERETU: the synthetic instruction is a SYSCALL at MSR_PVM_RETU_RIP. */
	".globl g_retu\n g_retu: syscall\n ud2\n"
	/* LSTAR: user SYSCALL lands here in supervisor mode. */
	".globl g_lstar\n g_lstar:\n"
	"  cmp $1, %eax\n je 1f\n jmp g_retu\n"
	"1: out %al, $0x10\n jmp g_retu\n"
	/* LSTAR for the layout probe. */
	".globl g_layout\n g_layout: out %al, $0x15\n ud2\n"
	/* Supervisor hypercall loop: rbx = N, r9 = hypercall number. */
	".globl g_hcloop\n g_hcloop:\n"
	"  rdtsc\n shl $32, %rdx\n or %rax, %rdx\n mov %rdx, %r12\n"
	"2: mov %r9, %rax\n syscall\n mov %rax, %r8\n dec %rbx\n jnz 2b\n"
	"  rdtsc\n shl $32, %rdx\n or %rax, %rdx\n sub %r12, %rdx\n mov %rdx, %r13\n"
	"  mov %r8, %rax\n out %al, $0x14\n mov %r15, %rbx\n jmp g_hcloop\n"
	/* Supervisor emulated-instruction loop. */
	".globl g_emuloop\n g_emuloop:\n"
	"  rdtsc\n shl $32, %rdx\n or %rax, %rdx\n mov %rdx, %r12\n"
	"3: mov %cr3, %rax\n dec %rbx\n jnz 3b\n"
	"  rdtsc\n shl $32, %rdx\n or %rax, %rdx\n sub %r12, %rdx\n mov %rdx, %r13\n"
	"  out %al, $0x14\n mov %r15, %rbx\n jmp g_emuloop\n"
	/* Supervisor exit loop. */
	".globl g_outloop\n g_outloop: out %al, $0x13\n jmp g_outloop\n"
	/* x86 IDT handlers (ring 0): #UD from ring 3 skips the ud2. */
	".globl g_udh\n g_udh: addq $2, (%rsp)\n iretq\n"
	".globl g_gph\n g_gph: out %al, $0x3d\n ud2\n"
	".globl g_fault\n g_fault: out %al, $0x30\n ud2\n"
	".globl g_pfh\n g_pfh: out %al, $0x3e\n ud2\n"
	/* Ring 0: write MSR_PVM_VCPU_STRUCT, read MSR_PVM_LINEAR_ADDRESS_RANGE. */
	".globl g_wrmsr\n g_wrmsr:\n"
	"  mov $0x4b564df1, %ecx\n mov $0x12000, %eax\n xor %edx, %edx\n wrmsr\n"
	"  mov $0x4b564df0, %ecx\n rdmsr\n out %al, $0x31\n ud2\n"
	/* Ring 0: PVM_SYNTHETIC_CPUID for leaves 0x40000000 and 0x40000002. */
	".globl g_scpuid\n g_scpuid:\n"
	"  mov $0x40000000, %eax\n xor %ecx, %ecx\n"
	"  .byte 0x0f,0x01,0x3c,0x25,0x50,0x56,0x4d,0xff,0x0f,0xa2\n"
	"  mov %rax, %r8\n mov %rbx, %r9\n mov $0x40000002, %eax\n xor %ecx, %ecx\n"
	"  .byte 0x0f,0x01,0x3c,0x25,0x50,0x56,0x4d,0xff,0x0f,0xa2\n"
	"  out %al, $0x32\n ud2\n"
	/* Ring 0: a plain ALU loop (dec/jnz), rbx = N. */
	".globl g_alu0\n g_alu0:\n"
	"  rdtsc\n shl $32, %rdx\n or %rax, %rdx\n mov %rdx, %r12\n"
	"8: dec %rbx\n jnz 8b\n"
	"  rdtsc\n shl $32, %rdx\n or %rax, %rdx\n sub %r12, %rdx\n mov %rdx, %r13\n"
	"  out %al, $0x14\n mov %r15, %rbx\n jmp g_alu0\n"
	/* LSTAR for a SYSCALL issued in ring 0. */
	".globl g_r0lstar\n g_r0lstar: out %al, $0x33\n ud2\n"
	/* int $0x80 gate (DPL 3): straight back. */
	".globl g_int80h\n g_int80h: iretq\n"
	/* MSR_PVM_EVENT_ENTRY: user events; +512: supervisor events. */
	".balign 1024\n"
	".globl g_event\n g_event:\n"
	"  mov 0x1b008, %rax\n movzbl (%rax), %eax\n cmp $6, %eax\n jne 5f\n"
	"  mov 0x1b000, %rax\n addq $2, (%rax)\n jmp g_retu\n"
	"5: out %al, $0x11\n ud2\n"
	".balign 512\n"
	"  out %al, $0x12\n ud2\n"
	".balign 4096\n"
	/* ---- user page ---- */
	".globl g_user\n g_user:\n"
	/* SYSCALL loop: r15 = N. */
	".globl g_usys\n g_usys:\n"
	"  mov %r15, %rbx\n rdtsc\n shl $32, %rdx\n or %rax, %rdx\n mov %rdx, %r12\n"
	"6: xor %eax, %eax\n syscall\n dec %rbx\n jnz 6b\n"
	"  rdtsc\n shl $32, %rdx\n or %rax, %rdx\n sub %r12, %rdx\n mov %rdx, %r13\n"
	"  mov $1, %eax\n syscall\n jmp g_usys\n"
	/* ud2 loop. */
	".globl g_uud\n g_uud:\n"
	"  mov %r15, %rbx\n rdtsc\n shl $32, %rdx\n or %rax, %rdx\n mov %rdx, %r12\n"
	"7: ud2\n dec %rbx\n jnz 7b\n"
	"  rdtsc\n shl $32, %rdx\n or %rax, %rdx\n sub %r12, %rdx\n mov %rdx, %r13\n"
	"  mov $1, %eax\n syscall\n jmp g_uud\n"
	/* Layout probe: one SYSCALL. */
	".globl g_ulayout\n g_ulayout: syscall\n ud2\n"
	/* Ring 3: the same ALU loop. */
	".globl g_alu3\n g_alu3:\n"
	"  mov %r15, %rbx\n rdtsc\n shl $32, %rdx\n or %rax, %rdx\n mov %rdx, %r12\n"
	"9: dec %rbx\n jnz 9b\n"
	"  rdtsc\n shl $32, %rdx\n or %rax, %rdx\n sub %r12, %rdx\n mov %rdx, %r13\n"
	"  out %al, $0x10\n jmp g_alu3\n"
	/* int $0x80 loop. */
	".globl g_uint80\n g_uint80:\n"
	"  mov %r15, %rbx\n rdtsc\n shl $32, %rdx\n or %rax, %rdx\n mov %rdx, %r12\n"
	"11: int $0x80\n dec %rbx\n jnz 11b\n"
	"  rdtsc\n shl $32, %rdx\n or %rax, %rdx\n sub %r12, %rdx\n mov %rdx, %r13\n"
	"  out %al, $0x10\n jmp g_uint80\n"
	/* LSTAR on a user page, for hosts where SYSCALL stays in ring 3:
	 * rax = 0 returns with a plain jump, rax = 1 exits. */
	".globl g_ulstar\n g_ulstar:\n"
	"  cmp $1, %eax\n je 10f\n jmp *%rcx\n"
	"10: out %al, $0x10\n jmp *%rcx\n"
	".balign 4096\n"
	".globl g_end\n g_end:\n"
	".popsection\n");
extern const unsigned char g_smod[], g_retu[], g_lstar[], g_layout[],
	g_hcloop[], g_emuloop[], g_outloop[], g_event[], g_user[],
	g_usys[], g_uud[], g_ulayout[], g_end[], g_udh[], g_gph[], g_fault[],
	g_wrmsr[], g_scpuid[], g_alu0[], g_alu3[], g_ulstar[], g_r0lstar[],
	g_int80h[], g_uint80[], g_pfh[];
#define SVA(l) (SMOD_CODE + (uint64_t)((l) - g_smod))
#define UVA(l) (USER_CODE + (uint64_t)((l) - g_user))

static int kvm;
static double tsc_ghz;

static void die(const char *what)
{
	fprintf(stderr, "pvm_probe: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static void calibrate_tsc(void)
{
	double t0 = now_us();
	uint64_t c0 = rdtsc();
	while (now_us() - t0 < 200000)
		;
	tsc_ghz = (rdtsc() - c0) / ((now_us() - t0) * 1e3);
}

struct vm {
	int fd, vcpu;
	struct kvm_run *run;
	uint8_t *mem;
};

static struct kvm_cpuid2 *supported_cpuid(void)
{
	int n = 256;
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
	c->nent = n;
	if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c) < 0)
		die("KVM_GET_SUPPORTED_CPUID");
	return c;
}

static int set_msr(int vcpu, uint32_t idx, uint64_t val)
{
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e;
	} m = { .h.nmsrs = 1, .e.index = idx, .e.data = val };
	return ioctl(vcpu, KVM_SET_MSRS, &m);
}

static int get_msr(int vcpu, uint32_t idx, uint64_t *val)
{
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e;
	} m = { .h.nmsrs = 1, .e.index = idx };
	int r = ioctl(vcpu, KVM_GET_MSRS, &m);
	*val = m.e.data;
	return r;
}

static void put64(struct vm *v, uint64_t gpa, uint64_t val)
{
	memcpy(v->mem + gpa, &val, 8);
}

static uint64_t get64(struct vm *v, uint64_t gpa)
{
	uint64_t x;
	memcpy(&x, v->mem + gpa, 8);
	return x;
}

static struct vm new_vm(void)
{
	struct vm v;
	v.fd = ioctl(kvm, KVM_CREATE_VM, 0);
	if (v.fd < 0)
		die("KVM_CREATE_VM");
	v.mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (v.mem == MAP_FAILED)
		die("mmap");
	struct kvm_userspace_memory_region r = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE,
		.userspace_addr = (uint64_t)v.mem,
	};
	if (ioctl(v.fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		die("KVM_SET_USER_MEMORY_REGION");
	/* Identity map of the first 2 MiB in 4 KiB pages. */
	put64(&v, PML4, PDPT | 7);
	put64(&v, PDPT, PD | 7);
	put64(&v, PD, PT | 7);
	for (uint64_t a = 0x1000; a < 0x200000; a += 0x1000)
		put64(&v, PT + (a >> 12) * 8, a | 3 | (USER_PAGE(a) ? 4 : 0));
	/* GDT: 0x10 kernel code64, 0x18 kernel data, 0x20 user code32,
	 * 0x28 user data, 0x30 user code64, 0x40 TSS (the host's user
	 * selectors are 0x23/0x2b/0x33, STAR below matches them). */
	put64(&v, GDT + 0x10, 0x00af9b000000ffffull);
	put64(&v, GDT + 0x18, 0x00cf93000000ffffull);
	put64(&v, GDT + 0x20, 0x00cffb000000ffffull);
	put64(&v, GDT + 0x28, 0x00cff3000000ffffull);
	put64(&v, GDT + 0x30, 0x00affb000000ffffull);
	put64(&v, GDT + 0x40, (0x68 + 8192 / 8) | ((uint64_t)TSS << 16) | (0x89ull << 40));
	/* TSS: RSP0, I/O bitmap at 0x68 allowing only port PORT_DONE. */
	put64(&v, TSS + 4, SMOD_STACK_TOP);
	*(uint16_t *)(v.mem + TSS + 0x66) = 0x68;
	memset(v.mem + TSS + 0x68, 0xff, 8192 / 8 + 1);
	v.mem[TSS + 0x68 + PORT_DONE / 8] &= ~(1 << (PORT_DONE % 8));
	/* IDT: #UD skips, #GP reports, everything else reports. */
	for (int vec = 0; vec < 256; vec++) {
		uint64_t t = vec == 6 ? SVA(g_udh) : vec == 13 ? SVA(g_gph) :
			     vec == 14 ? SVA(g_pfh) :
			     vec == 0x80 ? SVA(g_int80h) : SVA(g_fault);
		uint64_t dpl = vec == 0x80 ? 3 : 0;
		put64(&v, IDT + vec * 16, (t & 0xffff) | (0x10ull << 16) |
					  ((0x8eull | dpl << 5) << 40) |
					  (((t >> 16) & 0xffff) << 48));
		put64(&v, IDT + vec * 16 + 8, t >> 32);
	}
	size_t smod_len = g_user - g_smod, user_len = g_end - g_user;
	memcpy(v.mem + SMOD_CODE, g_smod, smod_len);
	memcpy(v.mem + USER_CODE, g_user, user_len);
	v.vcpu = ioctl(v.fd, KVM_CREATE_VCPU, 0);
	if (v.vcpu < 0)
		die("KVM_CREATE_VCPU");
	int sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	v.run = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, v.vcpu, 0);
	if (v.run == MAP_FAILED)
		die("mmap kvm_run");
	struct kvm_cpuid2 *c = supported_cpuid();
	if (ioctl(v.vcpu, KVM_SET_CPUID2, c) < 0)
		die("KVM_SET_CPUID2");
	free(c);
	return v;
}

static void free_vm(struct vm *v)
{
	close(v->vcpu);
	close(v->fd);
	munmap(v->mem, MEM_SIZE);
}

static struct kvm_segment seg(uint16_t sel, int code, int dpl)
{
	struct kvm_segment s = {
		.base = 0, .limit = 0xffffffff, .selector = sel,
		.type = code ? 0xb : 0x3, .present = 1, .dpl = dpl, .db = !code,
		.s = 1, .l = code, .g = 1,
	};
	return s;
}

/* Start the vCPU in 64-bit supervisor (dpl 0) or user (dpl 3) mode. */
static void start(struct vm *v, int dpl, uint64_t rip, uint64_t rsp,
		  struct kvm_regs *extra)
{
	struct kvm_sregs s;
	if (ioctl(v->vcpu, KVM_GET_SREGS, &s) < 0)
		die("KVM_GET_SREGS");
	s.cr0 = 0x80050033; /* PG AM WP NE ET MP PE */
	s.cr4 = 0x10620;    /* FSGSBASE OSXMMEXCPT OSFXSR PAE */
	s.efer = 0xd01;	    /* NXE LMA LME SCE */
	s.cr3 = PML4;
	s.cs = dpl ? seg(0x33, 1, 3) : seg(0x10, 1, 0);
	s.ss = dpl ? seg(0x2b, 0, 3) : seg(0x18, 0, 0);
	s.ds = s.es = s.fs = s.gs = seg(0, 0, dpl);
	s.ds.unusable = s.es.unusable = s.fs.unusable = s.gs.unusable = 1;
	s.gdt.base = GDT;
	s.gdt.limit = 0x4f;
	s.idt.base = IDT;
	s.idt.limit = 256 * 16 - 1;
	s.tr = (struct kvm_segment){ .base = TSS, .limit = 0x68 + 8192 / 8,
				     .selector = 0x40, .type = 11, .present = 1 };
	if (ioctl(v->vcpu, KVM_SET_SREGS, &s) < 0)
		die("KVM_SET_SREGS");
	struct kvm_regs r = extra ? *extra : (struct kvm_regs){ 0 };
	r.rip = rip;
	r.rsp = rsp;
	r.rflags = 0x2;
	if (ioctl(v->vcpu, KVM_SET_REGS, &r) < 0)
		die("KVM_SET_REGS");
}

static const char *exit_name(int r)
{
	switch (r) {
	case KVM_EXIT_IO: return "IO";
	case KVM_EXIT_SHUTDOWN: return "SHUTDOWN (triple fault)";
	case KVM_EXIT_INTERNAL_ERROR: return "INTERNAL_ERROR";
	case KVM_EXIT_FAIL_ENTRY: return "FAIL_ENTRY";
	case KVM_EXIT_EXCEPTION: return "EXCEPTION";
	case KVM_EXIT_HLT: return "HLT";
	case KVM_EXIT_MMIO: return "MMIO";
	default: return "other";
	}
}

static void on_tick(int sig)
{
	(void)sig;
}

/* KVM_RUN until an `out`; returns the port or -1 (reported). A run that
 * does not reach an `out` within 10 s is reported as stuck. */
static int run_to_out(struct vm *v, const char *what)
{
	double deadline = now_us() + 10e6;
	for (;;) {
		if (ioctl(v->vcpu, KVM_RUN, 0) < 0) {
			if ((errno == EINTR || errno == EAGAIN) && now_us() < deadline)
				continue;
			if (errno == EINTR) {
				struct kvm_regs r;
				struct kvm_sregs s;
				ioctl(v->vcpu, KVM_GET_REGS, &r);
				ioctl(v->vcpu, KVM_GET_SREGS, &s);
				printf("  %s: stuck for 10 s at rip %#llx (CS %#x dpl %d)\n",
				       what, r.rip, s.cs.selector, s.cs.dpl);
				return -1;
			}
			printf("  %s: KVM_RUN failed: %s\n", what, strerror(errno));
			return -1;
		}
		if (v->run->exit_reason == KVM_EXIT_IO &&
		    v->run->io.direction == KVM_EXIT_IO_OUT)
			return v->run->io.port;
		if (v->run->exit_reason == KVM_EXIT_IO)
			continue; /* an `in`: reads whatever is there */
		struct kvm_regs r;
		ioctl(v->vcpu, KVM_GET_REGS, &r);
		printf("  %s: exit %d %s at rip %#llx", what, v->run->exit_reason,
		       exit_name(v->run->exit_reason), r.rip);
		if (v->run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
			printf(" (suberror %u)", v->run->internal.suberror);
		printf("\n");
		return -1;
	}
}

static void report_caps(void)
{
	static const struct { const char *n; int c; } caps[] = {
		{ "KVM_CAP_XEN_HVM", 38 }, { "KVM_CAP_EXIT_HYPERCALL", 201 },
		{ "KVM_CAP_SYNC_REGS", 74 }, { "KVM_CAP_HYPERV", 44 },
	};
	printf("== capabilities\n");
	for (unsigned i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
		printf("  %-24s = %#x\n", caps[i].n,
		       ioctl(kvm, KVM_CHECK_EXTENSION, caps[i].c));
	struct kvm_cpuid2 *c = supported_cpuid();
	printf("== KVM_GET_SUPPORTED_CPUID, leaves 0x40000000..\n");
	for (unsigned i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if ((e->function & 0xffffff00) != 0x40000000)
			continue;
		char sig[13] = { 0 };
		memcpy(sig, &e->ebx, 4);
		memcpy(sig + 4, &e->ecx, 4);
		memcpy(sig + 8, &e->edx, 4);
		for (int k = 0; k < 12; k++)
			if (sig[k] && (sig[k] < 32 || sig[k] > 126))
				sig[k] = '.';
		printf("  %#x: eax=%#x ebx=%#x ecx=%#x edx=%#x \"%s\"\n",
		       e->function, e->eax, e->ebx, e->ecx, e->edx, sig);
	}
	free(c);
	struct kvm_msr_list *l = calloc(1, sizeof(*l) + 4096 * 4);
	l->nmsrs = 4096;
	if (ioctl(kvm, KVM_GET_MSR_INDEX_LIST, l) < 0)
		die("KVM_GET_MSR_INDEX_LIST");
	printf("== KVM_GET_MSR_INDEX_LIST: %u MSRs; PVM ones:", l->nmsrs);
	int any = 0;
	for (unsigned i = 0; i < l->nmsrs; i++)
		if ((l->indices[i] & ~0xfu) == MSR_PVM_BASE) {
			printf(" %#x", l->indices[i]);
			any = 1;
		}
	printf("%s\n", any ? "" : " none");
	free(l);
}

static void report_msrs(void)
{
	struct vm v = new_vm();
	printf("== PVM MSRs on a fresh vCPU (host-initiated KVM_SET/GET_MSRS)\n");
	for (uint32_t i = 0; i < 7; i++) {
		uint64_t before = 0, after = 0;
		int g0 = get_msr(v.vcpu, MSR_PVM_BASE + i, &before);
		uint64_t val = i == 0 ? before : (i == 1 ? PVCS : SMOD_CODE);
		int s = set_msr(v.vcpu, MSR_PVM_BASE + i, val);
		int g1 = get_msr(v.vcpu, MSR_PVM_BASE + i, &after);
		printf("  %#x %-22s get=%d (%#llx) set(%#llx)=%d get=%d (%#llx)\n",
		       MSR_PVM_BASE + i, pvm_msr_name[i], g0,
		       (unsigned long long)before, (unsigned long long)val, s,
		       g1, (unsigned long long)after);
		if (i == 0 && g0 == 1) {
			int s4 = (before >> 0) & 0x1ff, e4 = (before >> 16) & 0x1ff;
			printf("      L4 slots [%d, %d) = [%#llx, %#llx) allowed besides "
			       "the lower half\n", s4, e4,
			       (unsigned long long)((0x1fffe00ull | s4) << 39),
			       (unsigned long long)((0x1fffe00ull | e4) << 39));
		}
	}
	free_vm(&v);
}

/* Common PVM setup: PVCS, entries, LSTAR/STAR. */
static void pvm_msrs(struct vm *v, uint64_t lstar, int with_pvcs)
{
	struct { uint32_t i; uint64_t v; } m[] = {
		{ MSR_STAR, (0x23ull << 48) | (0x10ull << 32) },
		{ MSR_LSTAR, lstar },
		{ MSR_FMASK, 0x47700 },
		{ MSR_PVM_EVENT_ENTRY, SVA(g_event) },
		{ MSR_PVM_RETU_RIP, SVA(g_retu) },
		{ MSR_PVM_VCPU_STRUCT, with_pvcs ? PVCS : 0 },
	};
	static int told;
	for (unsigned i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		if (set_msr(v->vcpu, m[i].i, m[i].v) != 1 && !told)
			printf("  (KVM_SET_MSRS %#x=%#llx refused; said once)\n", m[i].i,
			       (unsigned long long)m[i].v);
	told = 1;
}

static int rip_off = -1; /* where the PVCS keeps the saved RIP */

static void probe_layout(void)
{
	printf("== user SYSCALL with a PVCS: where does it land?\n");
	struct vm v = new_vm();
	pvm_msrs(&v, SVA(g_layout), 1);
	start(&v, 3, UVA(g_ulayout), USER_STACK_TOP - 64, NULL);
	int port = run_to_out(&v, "layout");
	if (port == PORT_LAYOUT) {
		struct kvm_sregs s;
		struct kvm_regs r;
		ioctl(v.vcpu, KVM_GET_SREGS, &s);
		ioctl(v.vcpu, KVM_GET_REGS, &r);
		printf("  reached LSTAR: CS %#x dpl %d, rcx %#llx, r11 %#llx, "
		       "rsp %#llx\n", s.cs.selector, s.cs.dpl, r.rcx, r.r11, r.rsp);
		uint64_t ret = UVA(g_ulayout) + 2;
		printf("  PVCS qwords holding the user return RIP %#llx:",
		       (unsigned long long)ret);
		for (int o = 0; o < 128; o += 8)
			if (get64(&v, PVCS + o) == ret) {
				printf(" +%d", o);
				if (rip_off < 0)
					rip_off = o;
			}
		printf("\n  PVCS +64: user_cs %#x user_ss %#x\n",
		       *(uint16_t *)(v.mem + PVCS + 64),
		       *(uint16_t *)(v.mem + PVCS + 66));
		printf("  => %s\n", rip_off == 88 ? "current PVCS layout (rip at +88, no rsp)"
			: rip_off == 96 ? "v1 PVCS layout (rip at +96, rsp at +104)"
			: "unknown layout");
	} else if (port == PORT_PF) {
		uint64_t f = SMOD_STACK_TOP - 48; /* error code, RIP, CS, RFLAGS, RSP, SS */
		struct kvm_sregs s;
		ioctl(v.vcpu, KVM_GET_SREGS, &s);
		printf("  no: #PF (error %#llx, CR2 %#llx) at RIP %#llx CS %#llx, i.e. the\n"
		       "  SYSCALL jumped to LSTAR (%#llx, a supervisor-only page) without\n"
		       "  leaving ring 3; the PVCS was not written (first qword %#llx)\n",
		       (unsigned long long)get64(&v, f), s.cr2,
		       (unsigned long long)get64(&v, f + 8),
		       (unsigned long long)get64(&v, f + 16),
		       (unsigned long long)SVA(g_layout),
		       (unsigned long long)get64(&v, PVCS + 64));
	} else {
		printf("  did not reach LSTAR (port %#x)\n", port);
	}
	free_vm(&v);
}

struct result {
	const char *name;
	double us_wall, us_tsc;
	long long rax;
};

/* Fill the PVCS as if the user had just been interrupted at `rip`, so that
 * a first ERETU enters user mode there. */
static void pvcs_user_frame(struct vm *v, uint64_t rip)
{
	uint8_t *p = v->mem + PVCS;
	memset(p, 0, 4096);
	*(uint16_t *)(p + 64) = 0x33;
	*(uint16_t *)(p + 66) = 0x2b;
	if (rip_off == 88) {
		*(uint16_t *)(p + 70) = 0x100; /* event_vector = STD */
		*(uint32_t *)(p + 80) = 0x202; /* eflags */
		put64(v, PVCS + 88, rip);
		put64(v, PVCS + 96, rip);      /* rcx */
		put64(v, PVCS + 104, 0x202);   /* r11 */
		put64(v, SDATA, PVCS + 88);
		put64(v, SDATA + 8, PVCS + 70);
	} else { /* v1 */
		*(uint32_t *)(p + 88) = 0x202;
		put64(v, PVCS + 96, rip);
		put64(v, PVCS + 104, USER_STACK_TOP - 64);
		put64(v, PVCS + 112, rip);
		put64(v, PVCS + 120, 0x202);
		put64(v, SDATA, PVCS + 96);
		put64(v, SDATA + 8, PVCS + 12);
	}
}

/* A loop that reports through `out` after n iterations with r13 = TSC
 * cycles; runs `rounds` KVM_RUNs and keeps the best. */
static int timed(struct vm *v, const char *name, int expect_port, long n,
		 int rounds, struct result *res)
{
	res->name = name;
	res->us_wall = res->us_tsc = 1e30;
	for (int k = 0; k < rounds; k++) {
		double t0 = now_us();
		int port = run_to_out(v, name);
		double t = now_us() - t0;
		if (port != expect_port) {
			if (port >= 0)
				printf("  %s: unexpected port %#x\n", name, port);
			return -1;
		}
		struct kvm_regs r;
		ioctl(v->vcpu, KVM_GET_REGS, &r);
		if (t / n < res->us_wall)
			res->us_wall = t / n;
		if (r.r13 / tsc_ghz / 1e3 / n < res->us_tsc)
			res->us_tsc = r.r13 / tsc_ghz / 1e3 / n;
		res->rax = (long long)r.rax;
	}
	return 0;
}

static void print_result(struct result *r, const char *extra)
{
	printf("  %-22s %9.3f us/iter (wall), %9.3f us/iter (guest TSC)%s\n",
	       r->name, r->us_wall, r->us_tsc, extra ? extra : "");
}

/* Map the user code page at an address in L4 slot `slot` and run the ring-3
 * ALU loop (one iteration, then `out`) from there. */
static void va_slots(void)
{
	static const int slots[] = { 255, 256, 257, 258, 262, 272, 273, 300, 402,
				     468, 510, 511 };
	printf("== ring-3 code at VAs in upper-half L4 slots (user page, U=1)\n  ");
	for (unsigned i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
		int sl = slots[i];
		struct vm v = new_vm();
		uint64_t va = ((uint64_t)sl << 39) | (sl >= 256 ? 0xffff000000000000ull : 0);
		if (sl == 511)
			va = 0xffffffff80000000ull;
		put64(&v, PML4 + sl * 8, 0x8000 | 7);
		put64(&v, 0x8000 + ((va >> 30) & 511) * 8, 0x9000 | 7);
		put64(&v, 0x9000 + ((va >> 21) & 511) * 8, 0xa000 | 7);
		put64(&v, 0xa000 + ((va >> 12) & 511) * 8, USER_CODE | 7);
		struct kvm_regs x = { .r15 = 1, .rbx = 1 };
		start(&v, 3, va + (g_alu3 - g_user), USER_STACK_TOP - 64, &x);
		char what[32];
		snprintf(what, sizeof(what), "slot %d", sl);
		int port = run_to_out(&v, what);
		printf("%d:%s ", sl, port == PORT_DONE ? "ok" : port == PORT_PF ? "#PF" : port == PORT_FAULT ? "fault" : "?");
		free_vm(&v);
	}
	printf("\n");
}

static void guest_msr_and_cpuid(void)
{
	printf("== ring 0 (CPL 0) guest: WRMSR/RDMSR of PVM MSRs, PVM_SYNTHETIC_CPUID\n");
	struct vm v = new_vm();
	pvm_msrs(&v, SVA(g_lstar), 0);
	start(&v, 0, SVA(g_wrmsr), SMOD_STACK_TOP, NULL);
	int port = run_to_out(&v, "wrmsr");
	struct kvm_regs r;
	ioctl(v.vcpu, KVM_GET_REGS, &r);
	if (port == PORT_GP)
		printf("  WRMSR 0x4b564df1 (MSR_PVM_VCPU_STRUCT) from ring 0 -> #GP at rip %#llx\n",
		       (unsigned long long)get64(&v, SMOD_STACK_TOP - 40));
	else if (port == PORT_WRMSR)
		printf("  WRMSR/RDMSR of PVM MSRs accepted; range MSR = %#llx\n",
		       (r.rdx << 32) | (r.rax & 0xffffffff));
	free_vm(&v);

	v = new_vm();
	pvm_msrs(&v, SVA(g_lstar), 0);
	start(&v, 0, SVA(g_scpuid), SMOD_STACK_TOP, NULL);
	port = run_to_out(&v, "synthetic cpuid");
	ioctl(v.vcpu, KVM_GET_REGS, &r);
	if (port == PORT_CPUID)
		printf("  PVM_SYNTHETIC_CPUID(0x40000000): eax=%#llx ebx=%#llx; "
		       "(0x40000002): eax=%#llx ebx=%#llx %s\n",
		       r.r8 & 0xffffffff, r.r9 & 0xffffffff, r.rax & 0xffffffff,
		       r.rbx & 0xffffffff,
		       (r.rbx & 0xffffffff) == 0x6d7670 ? "(\"pvm\")" : "(no \"pvm\" signature)");
	else
		printf("  PVM_SYNTHETIC_CPUID: port %#x\n", port);
	free_vm(&v);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct sigaction sa = { .sa_handler = on_tick };
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = { { 0, 200000 }, { 0, 200000 } };
	setitimer(ITIMER_REAL, &it, NULL);
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("open /dev/kvm");
	calibrate_tsc();
	printf("pvm_probe: %ld iterations per timed run, TSC %.3f GHz\n", n, tsc_ghz);
	report_caps();
	report_msrs();
	probe_layout();

	guest_msr_and_cpuid();
	va_slots();

	printf("== timed loops (best of 5 runs)\n");
	struct result res;
	struct kvm_regs x = { 0 };
	char buf[128];
	x.r15 = x.rbx = n;
	struct vm v;

	if (rip_off > 0) {
		v = new_vm();
		pvm_msrs(&v, SVA(g_lstar), 1);
		pvcs_user_frame(&v, UVA(g_usys));
		start(&v, 0, SVA(g_retu), USER_STACK_TOP - 64, &x);
		if (!timed(&v, "pvm-syscall-eretu", PORT_DONE, n, 5, &res))
			print_result(&res, "");
		free_vm(&v);

		v = new_vm();
		pvm_msrs(&v, SVA(g_lstar), 1);
		pvcs_user_frame(&v, UVA(g_uud));
		start(&v, 0, SVA(g_retu), USER_STACK_TOP - 64, &x);
		if (!timed(&v, "pvm-ud2-bounce", PORT_DONE, n, 5, &res))
			print_result(&res, "");
		free_vm(&v);
	} else {
		printf("  (PVM ERETU loops skipped: no PVM user->supervisor switch seen)\n");
	}

	/* Ring 3, native: a dec/jnz loop, N iterations. */
	v = new_vm();
	start(&v, 3, UVA(g_alu3), USER_STACK_TOP - 64, &x);
	if (!timed(&v, "ring3-dec-jnz", PORT_DONE, n, 5, &res))
		print_result(&res, " (2 instructions)");
	free_vm(&v);

	/* Ring 0: the same loop, N/100 iterations. */
	long m = n / 100 ? n / 100 : 1;
	x.r15 = x.rbx = m;
	v = new_vm();
	start(&v, 0, SVA(g_alu0), SMOD_STACK_TOP, &x);
	if (!timed(&v, "ring0-dec-jnz", PORT_SDONE, m, 5, &res))
		print_result(&res, " (2 instructions)");
	free_vm(&v);

	/* Ring 0: mov %cr3 (privileged). */
	v = new_vm();
	start(&v, 0, SVA(g_emuloop), SMOD_STACK_TOP, &x);
	if (!timed(&v, "ring0-mov-cr3", PORT_SDONE, m, 5, &res))
		print_result(&res, " (mov %cr3 + dec/jnz)");
	free_vm(&v);

	/* Ring 0: SYSCALL with RAX=29 (Xen sched_op): a PVM hypercall
	 * would return here; x86 semantics jump to LSTAR. */
	v = new_vm();
	pvm_msrs(&v, SVA(g_r0lstar), 0);
	struct kvm_regs y = x;
	y.r9 = 29;
	start(&v, 0, SVA(g_hcloop), SMOD_STACK_TOP, &y);
	{
		int port = run_to_out(&v, "ring0-syscall");
		struct kvm_regs r;
		struct kvm_sregs sr;
		ioctl(v.vcpu, KVM_GET_REGS, &r);
		ioctl(v.vcpu, KVM_GET_SREGS, &sr);
		if (port == PORT_SDONE)
			printf("  ring0-syscall (RAX=29): returned rax=%lld in place, no exit "
			       "(a PVM hypercall)\n", (long long)r.r8);
		else if (port == 0x33)
			printf("  ring0-syscall (RAX=29): jumped to LSTAR at CS %#x dpl %d, "
			       "rcx=%#llx (an x86 SYSCALL, not a hypercall)\n",
			       sr.cs.selector, sr.cs.dpl, r.rcx);
	}
	free_vm(&v);
	x.r15 = x.rbx = n;

	/* x86 path: ring-3 ud2 -> IDT #UD gate -> ring 0 (add; iretq) -> ring 3. */
	m = n / 10 ? n / 10 : 1;
	x.r15 = x.rbx = m;
	v = new_vm();
	pvm_msrs(&v, UVA(g_ulstar), 0);
	start(&v, 3, UVA(g_uud), USER_STACK_TOP - 64, &x);
	if (!timed(&v, "x86-ud2-idt-iretq", PORT_DONE, m, 5, &res))
		print_result(&res, " (ring 3 -> ring 0 -> ring 3)");
	free_vm(&v);

	/* x86 path: ring-3 int $0x80 -> DPL-3 gate -> ring 0 iretq -> ring 3. */
	v = new_vm();
	pvm_msrs(&v, UVA(g_ulstar), 0);
	start(&v, 3, UVA(g_uint80), USER_STACK_TOP - 64, &x);
	if (!timed(&v, "x86-int80-iretq", PORT_DONE, m, 5, &res))
		print_result(&res, " (ring 3 -> ring 0 -> ring 3)");
	free_vm(&v);

	/* x86 path: ring-3 SYSCALL -> LSTAR; where does it run? */
	x.r15 = x.rbx = n;
	v = new_vm();
	pvm_msrs(&v, UVA(g_ulstar), 0);
	start(&v, 3, UVA(g_usys), USER_STACK_TOP - 64, &x);
	if (!timed(&v, "x86-syscall-lstar", PORT_DONE, n, 5, &res)) {
		struct kvm_sregs sr;
		ioctl(v.vcpu, KVM_GET_SREGS, &sr);
		snprintf(buf, sizeof(buf), " (LSTAR on a user page, at CS %#x dpl %d, "
			 "back by jmp *%%rcx)", sr.cs.selector, sr.cs.dpl);
		print_result(&res, buf);
	}
	free_vm(&v);

	/* Exit to this process and back: `out` from ring 0. */
	v = new_vm();
	start(&v, 0, SVA(g_outloop), SMOD_STACK_TOP, &x);
	long e = n / 20 ? n / 20 : 1;
	double best = 1e30;
	for (int k = 0; k < 5; k++) {
		double t0 = now_us();
		long i;
		for (i = 0; i < e; i++)
			if (run_to_out(&v, "ring0-out-exit") != PORT_LOOP)
				break;
		if (i < e)
			break;
		double t = (now_us() - t0) / e;
		if (t < best)
			best = t;
	}
	if (best < 1e30)
		printf("  %-22s %9.3f us/iter (wall: KVM_RUN -> out exit -> KVM_RUN)\n",
		       "ring0-out-exit", best);
	best = 1e30;
	for (int k = 0; k < 5; k++) {
		struct kvm_regs r;
		double t0 = now_us();
		for (long i = 0; i < e; i++)
			ioctl(v.vcpu, KVM_GET_REGS, &r);
		double t = (now_us() - t0) / e;
		if (t < best)
			best = t;
	}
	printf("  %-22s %9.3f us/call\n", "ioctl KVM_GET_REGS", best);
	free_vm(&v);
	return 0;
}
