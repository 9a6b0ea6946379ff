/*
 * Entry point, Xen ELF notes and trap/callback entry stubs shared by every
 * conformance guest.
 */

#define ELFNOTE(type, desctype, descdata)	\
	.pushsection .note.Xen, "a", @note;	\
	.balign 4;				\
	.long 2f - 1f;				\
	.long 4f - 3f;				\
	.long type;				\
1:	.asciz "Xen";				\
2:	.balign 4;				\
3:	desctype descdata;			\
4:	.balign 4;				\
	.popsection

#ifdef FREESTANDING
/*
 * The freestanding layout (freestanding.ld), as Mini-OS and unikernels use
 * the notes: no VIRT_BASE (0), no PADDR_OFFSET (0), no ENTRY (e_entry), and
 * a hypercall page the hypervisor fills.
 */
	ELFNOTE(6, .asciz, "xenkvm-freestanding")	/* GUEST_OS */
	ELFNOTE(8, .asciz, "generic")			/* LOADER */
	ELFNOTE(5, .asciz, "xen-3.0")			/* XEN_VERSION */
	ELFNOTE(2, .quad, hypercall_page)		/* HYPERCALL_PAGE */
	ELFNOTE(10, .asciz, "!writable_page_tables")	/* FEATURES */
#else
	ELFNOTE(6, .asciz, "xenkvm-conformance")	/* GUEST_OS */
	ELFNOTE(8, .asciz, "generic")			/* LOADER */
	ELFNOTE(5, .asciz, "xen-3.0")			/* XEN_VERSION */
	ELFNOTE(3, .quad, 0xffffffff80000000)		/* VIRT_BASE */
	ELFNOTE(4, .quad, 0)				/* PADDR_OFFSET */
	ELFNOTE(1, .quad, _start)			/* ENTRY */
	ELFNOTE(10, .asciz, "!writable_page_tables|pae_pgdir_above_4gb") /* FEATURES */
#endif

	.section .text.head, "ax"
	.globl _start
_start:
	cld
#ifdef FREESTANDING
	/* The registers the domain builder chose, for the guest to check. */
	movq %rsp, boot_rsp(%rip)
	movq %rsi, boot_rsi(%rip)
#endif
	/* rsi = start_info, rsp = the builder's boot stack: switch to ours. */
	leaq boot_stack_top(%rip), %rsp
	movq %rsi, %rdi
	call runtime_start
	ud2

	.text
/* Per-vector stubs, 16 bytes apart: push the vector code and join trap_common. */
	.balign 16
	.globl trap_stub_table
trap_stub_table:
	.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.balign 16
	.if (\v == 8) || (\v >= 10 && \v <= 14) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
	pushq $(\v + 0x10000)
	.else
	pushq $\v
	.endif
	jmp trap_common
	.endr
	.balign 16
	.globl trap_stub_0x80
trap_stub_0x80:
	pushq $0x80
	jmp trap_common

	.globl event_stub
event_stub:
	pushq $256
	jmp trap_common

	.globl syscall_stub
syscall_stub:
	pushq $257
	jmp trap_common

/*
 * Stack on entry: code, RCX, R11, [err], RIP, CS, RFLAGS, RSP, SS.
 * Save every GPR, call trap_dispatch(struct regs *), restore, and leave
 * through the iret hypercall with the (possibly edited) frame.
 */
trap_common:
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rbp
	pushq %rsi
	pushq %rdi
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, %rdi
	movq %rsp, %rbx
	andq $-16, %rsp
	call trap_dispatch
	movq %rbx, %rsp
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rdi
	popq %rsi
	popq %rbp
	popq %rdx
	popq %rcx
	popq %rbx
	popq %rax
	testl $0x10000, (%rsp)
	jz 1f
	addq $8, %rsp		/* code */
	popq %rcx
	popq %r11
	addq $8, %rsp		/* error code */
	jmp xen_iret
1:	addq $8, %rsp		/* code */
	popq %rcx
	popq %r11

/* rsp -> RIP, CS, RFLAGS, RSP, SS: return through HYPERVISOR_iret. */
	.globl xen_iret
xen_iret:
	pushq $0		/* flags */
	pushq %rcx
	pushq %r11
	pushq %rax
	movl $23, %eax
	syscall
	ud2

#ifdef FREESTANDING
/* Filled by the domain builder: 128 stubs of 32 bytes, one per hypercall. */
	.section .text.hypercall_page, "ax"
	.balign 4096
	.globl hypercall_page
hypercall_page:
	.fill 4096, 1, 0

	.bss
	.balign 8
	.globl boot_rsp, boot_rsi
boot_rsp:
	.quad 0
boot_rsi:
	.quad 0
#endif

	.bss
	.balign 16
boot_stack:
	.skip 32768
	.globl boot_stack_top
boot_stack_top:
	.section .note.GNU-stack, "", @progbits
