# xenkvm: the per-vCPU SYSCALL entry on hardware hosts (VT-x / AMD-V).
# Runs in ring 0 on the guest's stack, IF=0 (FMASK). RCX = guest RIP,
# R11 = guest RFLAGS, RAX = hypercall number. The data page follows at +0x1000.
        .code64
entry:
        mov %rcx, save_rcx(%rip)
        mov %r11, save_r11(%rip)
        mov %rsp, save_rsp(%rip)
        mov %rax, save_rax(%rip)
        cmpb $0, kmode(%rip)
        je slow
        cmp $23, %rax              # __HYPERVISOR_iret
        je iret
        cmp $24, %rax              # __HYPERVISOR_vcpu_op
        je vcpu_op
slow:
        mov save_rcx(%rip), %rcx
        mov save_r11(%rip), %r11
        mov save_rsp(%rip), %rsp
        mov save_rax(%rip), %rax
        out %al, $0xf0             # exit: the monitor handles the SYSCALL
        ud2
iret:   # frame at (%rsp): rax r11 rcx flags rip cs rflags rsp ss
        movabs $0x800000000047, %rcx   # rcx = rsp - (0xffff800000000000 - 71)
        add %rsp, %rcx
        movabs $0x80000000047, %rax
        cmp %rax, %rcx             # frame [rsp, rsp+72) touches slots 256-271: slow
        jb slow                    # (this code must never read or write the monitor's area)
        testb $3, 40(%rsp)         # to guest user mode: slow
        jnz slow
        testl $0x100, 24(%rsp)     # VGCF_in_syscall: slow
        jnz slow
        mov vcpu_info(%rip), %rcx
        test %rcx, %rcx
        jz slow
        testl $0x200, 48(%rsp)     # events enabled after the return?
        jz 1f
        xor %eax, %eax
        xchg %al, 1(%rcx)          # evtchn_upcall_mask = 0 (locked: a full barrier)
        cmpb $0, (%rcx)            # evtchn_upcall_pending: the monitor delivers
        jne slow
        jmp 2f
1:      movb $1, 1(%rcx)           # evtchn_upcall_mask = 1
2:      orq $3, 40(%rsp)           # CS RPL 3
        orq $3, 64(%rsp)           # SS RPL 3
        mov 48(%rsp), %r11
        and $0x3d4fd7, %r11        # the architectural flags less IOPL and VM, as the slow path
        or $0x202, %r11            # IF, bit 1
        mov %r11, 48(%rsp)
        incq n_iret(%rip)
        mov 8(%rsp), %r11
        mov 16(%rsp), %rcx
        mov (%rsp), %rax
        add $32, %rsp
        iretq
vcpu_op:
        cmp $8, %rdi               # VCPUOP_set_singleshot_timer
        jne slow
        cmp vcpu_id(%rip), %rsi    # on this vCPU
        jne slow
        movabs $0x80000000000f, %rcx   # rcx = rdx - (0xffff800000000000 - 15)
        add %rdx, %rcx
        movabs $0x8000000000f, %rax
        cmp %rax, %rcx             # argument [rdx, rdx+16) touches slots 256-271: slow
        jb slow
        mov 8(%rdx), %ecx          # flags: none
        test %ecx, %ecx
        jnz slow
        mov (%rdx), %rcx           # timeout_abs_ns
        mov %rcx, %rax
        xchg %rax, deadline(%rip)  # publish (locked: a full barrier)
        cmp armed(%rip), %rcx      # before the timer thread's next look: slow
        jb slow
        incq n_timer(%rip)
        mov save_rcx(%rip), %rcx
        mov save_r11(%rip), %r11
        xor %eax, %eax
        sysretq
code_end:
        .org 0x1000                # the data page (per vCPU, supervisor, no-execute)
vcpu_info: .quad 0       # direct-map VA of this vCPU's vcpu_info; 0: iret fast path off
kmode: .quad 0       # u8: the guest vCPU is in kernel mode
deadline: .quad 0       # singleshot deadline set here; ~0: none
armed: .quad 0       # the timer thread looks again at this time; ~0: timer fast path off
save_rcx: .quad 0
save_r11: .quad 0
save_rsp: .quad 0
save_rax: .quad 0
n_iret: .quad 0
n_timer: .quad 0
vcpu_id: .quad 0
