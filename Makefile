# P2PKP: module, tools, VM harness.  `make help` lists every target.
#
# Everything that needs the pinned kernel or the Python environment depends on
# `deps`, which is idempotent and quick once done.  Python jobs go through one
# command line, $(CLI) = python -m p2pkpvm SUBCOMMAND (each has --help).

VENV     ?= .venv
PY       := $(VENV)/bin/python
CLI      := $(PY) -m p2pkpvm
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
PYTEST   := $(PY) -m pytest
PYTEST_ARGS ?=
VMS      ?= 4
# QEMU=debian|backports: which qemu-system-x86 `make deps` installs (default: configs/qemu.yaml)
QEMU     ?=

# The kernel pin (PIN=6.1|6.12), the kernel the module is built for and the guests boot
# (KERNEL=stock|lean|debug, KDIR), where each module is built, the debug kernel's build: all
# in one place, kernel/kernel.mk.
.DEFAULT_GOAL := all
include kernel/kernel.mk

.PHONY: all module tools bench-tools crashme deps venv vm-test vm-test-long vm-up vm-down \
	vm-shell demo check unit w1 checkpatch lint clean help kernel debug-module \
	debug-crashme lean-kernel lean-module lean-crashme bench bench-mtu bench-scale lossbench vm-test-matrix \
	vm-test-subset

all: module tools bench-tools

help:
	@echo "Build"
	@echo "  make                 p2pkp.ko (against the pin's kernel), tools/ and tools/bench/"
	@echo "  make module          p2pkp.ko only (KDIR=<build tree> overrides the tree; another"
	@echo "                       pin or kernel than the default's builds in out/<kernel>-<pin>-module)"
	@echo "  make tools           p2pkp-send, p2pkp-recv, p2pkp-op, p2pkp-fuzz-sys"
	@echo "  make bench-tools     the baselines of make bench (tools/bench)"
	@echo "  make crashme         the test-only crash module (vmtests/crashme)"
	@echo "  make kernel          the debug kernel (KASAN, UBSAN, lockdep, kmemleak; cached)"
	@echo "  make debug-module    p2pkp.ko for the debug kernel (out/debug-module)"
	@echo "  make debug-crashme   crashme.ko for the debug kernel (out/debug-crashme)"
	@echo "  make lean-kernel     the lean guest kernel (guest.config only: faster boots; cached)"
	@echo "  make lean-module | lean-crashme   p2pkp.ko / crashme.ko for it (out/lean-*)"
	@echo "  make clean           remove build output"
	@echo "Set up"
	@echo "  make deps            the pin's kernel packages, host tools, QEMU and .venv (idempotent)"
	@echo "  make venv            .venv with the harness installed (pip install -e .)"
	@echo "Test"
	@echo "  make check           checkpatch --strict, W=1 build, ruff, mypy, unit tests"
	@echo "  make checkpatch | w1 | lint | unit   one part of make check"
	@echo "  make vm-test         deps + build + unit tests + every VM test not marked long"
	@echo "  make vm-test-matrix  make vm-test on every pin ($(PIN_NAMES)), one after the other"
	@echo "  make vm-test-subset  make vm-test of the multi-peer subset only (CI: PIN=6.12)"
	@echo "  make vm-test-long    the long campaigns (marker 'long')"
	@echo "Fast loop"
	@echo "  make vm-up [VMS=4]   boot a cluster, module loaded, and keep it (Ctrl-C or vm-down)"
	@echo "  make vm-down         shut the vm-up cluster down"
	@echo "                       then: make module && .venv/bin/pytest --attach vmtests -k ..."
	@echo "                       (a rebuilt p2pkp.ko is reloaded in every guest before a test)"
	@echo "Use"
	@echo "  make vm-shell VMS=n  interactive shells on n networked guests, module loaded"
	@echo "  make demo            boot 3 guests, send one file from vm1 to vm2 and vm3"
	@echo "  make bench [QUICK=1] P2PKP vs baselines on 4 guests -> results/<ts>, docs/results"
	@echo "  make bench-mtu       64 MiB to 1 and 3 peers at MTU 1500, 9000, 65520 -> docs/results/mtu-N"
	@echo "  make bench-scale     one file to 1..64 receivers per method -> docs/results/scaling"
	@echo "                       (SCALE_ARGS='--receivers 1,4,16,64 --reps 1 ...')"
	@echo "  make lossbench       goodput + retransmission ratio, 64 MiB to 3 peers at 0/1/5% loss"
	@echo "Variables: PIN=$(subst $(eval) ,|,$(PIN_NAMES)) (default $(PIN_DEFAULT), configs/kernel-pin.yaml)  QEMU=debian|backports"
	@echo "           KERNEL=stock|lean|debug  KDIR=<build tree>  VMS=<n>  PYTEST_ARGS='-k multipeer'"
	@echo "           P2PKP_ACCEL=kvm|tcg  BENCH_ARGS=...  LOSSBENCH_ARGS=..."
	@echo "Everything in Python: $(CLI) --help"

module: $(MODULE_SRC)
	@kernel/check-build.sh $(KDIR) $(PIN_NAME)
	@$(COPY_MODULE)
	$(MAKE) -C $(KDIR) M=$(MODULE_DIR) modules

tools:
	$(MAKE) -C tools

bench-tools:
	$(MAKE) -C tools/bench

crashme:
	@kernel/check-build.sh $(KDIR) $(PIN_NAME)
	@$(COPY_CRASHME)
	$(MAKE) -C $(KDIR) M=$(CRASHME_DIR) modules

$(VENV)/.stamp: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check -e .
	touch $@

venv: $(VENV)/.stamp

deps: venv
	$(CLI) --pin $(PIN_NAME) deps install$(if $(QEMU), --qemu $(QEMU))

# make vm-test prints how long deps and the build took, so the run summary has every stage.
vm-test:
	@t0=$$(date +%s) && $(MAKE) --no-print-directory deps && t1=$$(date +%s) && \
	$(MAKE) --no-print-directory $(VM_TEST_BUILD) && t2=$$(date +%s) && \
	P2PKP_STAGE_DEPS_S=$$((t1 - t0)) P2PKP_STAGE_BUILD_S=$$((t2 - t1)) \
	$(PYTEST) tools/tests vmtests --pin $(PIN_NAME) --kernel $(KERNEL) $(PYTEST_ARGS)

# make vm-test on every pin, each with its own deps and build, one after the other; goes on
# after a failing pin, then prints one summary line per pin (from its junit file,
# $(MATRIX_OUT)/vm-test-<pin>.xml) and fails if any pin failed.  The run is a variable so that
# `make -n vm-test-matrix` prints the loop instead of running the suites (and the unit tests
# run the loop with a stand-in).
VM_TEST_MATRIX_RUN ?= $(MAKE) --no-print-directory vm-test
MATRIX_OUT ?= out
vm-test-matrix: venv
	@mkdir -p $(MATRIX_OUT); rc=0; report=""; for p in $(PIN_NAMES); do \
		echo "vm-test-matrix: PIN=$$p"; t0=$$(date +%s); rm -f $(MATRIX_OUT)/vm-test-$$p.xml; \
		if $(VM_TEST_MATRIX_RUN) PIN=$$p \
			PYTEST_ARGS="$(PYTEST_ARGS) --junitxml=$(MATRIX_OUT)/vm-test-$$p.xml"; \
		then r=passed; else r=FAILED; rc=1; fi; \
		report="$$report  PIN=$$p: $$r in $$(( $$(date +%s) - t0 )) s: \
$$($(CLI) junit-summary $(MATRIX_OUT)/vm-test-$$p.xml)\n"; \
	done; printf "vm-test-matrix, one line per pin:\n$$report"; exit $$rc

# The subset CI runs on the second pin (the whole matrix does not fit CI's 90 minutes, see
# README "Kernel pins"): every multi-peer test, the socket semantics and the version-dependent
# parts of the module (O_TMPFILE fallback, descriptors, load/unload, batched receive, zero-copy).
SUBSET_K ?= multipeer or test_async or test_descriptors or test_module or fallback_without_o_tmpfile or test_rx_batch or test_zerocopy or test_resume or test_multicast
vm-test-subset:
	@$(MAKE) --no-print-directory vm-test PYTEST_ARGS='-k "$(SUBSET_K)" $(PYTEST_ARGS)'

vm-test-long: deps
	$(MAKE) all
	$(PYTEST) vmtests --long -m long --pin $(PIN_NAME) --kernel $(KERNEL) $(PYTEST_ARGS)

vm-up: deps
	$(MAKE) $(VM_TEST_BUILD)
	$(CLI) --pin $(PIN_NAME) up --vms $(VMS) --kernel $(KERNEL) --module --serve

vm-down: venv
	$(CLI) down

vm-shell: deps
	$(MAKE) all
	$(CLI) --pin $(PIN_NAME) shell --vms $(VMS)

demo: deps
	$(MAKE) all
	$(CLI) --pin $(PIN_NAME) demo

unit: venv tools
	$(PYTEST) tools/tests $(PYTEST_ARGS)

# The module, its UAPI header and the test-only crashme module.  Ignored:
# CONST_STRUCT (p2pkp_ops.family follows the `family` parameter, see p2pkp.c);
# in p2pkp_compat.h only, what a compat header is for (version tests, the
# idmap typedef).
CHECKPATCH_FILES := p2pkp.c p2pkp.h vmtests/crashme/crashme.c
CHECKPATCH_COMPAT_IGNORE := LINUX_VERSION_CODE,CONSTANT_COMPARISON,NEW_TYPEDEFS
checkpatch: deps
	@cp=$$($(CLI) --pin $(PIN_NAME) deps checkpatch) && for f in $(CHECKPATCH_FILES); do \
		echo "checkpatch --strict $$f"; \
		$$cp --no-tree --strict --quiet --ignore CONST_STRUCT -f $$f || exit 1; \
	done && echo "checkpatch --strict p2pkp_compat.h" && \
	$$cp --no-tree --strict --quiet --ignore $(CHECKPATCH_COMPAT_IGNORE) -f p2pkp_compat.h

lint: venv
	$(VENV)/bin/ruff check tools vmtests
	$(VENV)/bin/ruff format --check tools vmtests
	$(VENV)/bin/mypy

# W=1 from scratch so that every warning is seen; any warning fails.
w1: deps
	@kernel/check-build.sh $(KDIR) $(PIN_NAME)
	@$(COPY_MODULE) && $(COPY_CRASHME)
	$(MAKE) -C $(KDIR) M=$(MODULE_DIR) clean >/dev/null
	$(MAKE) -C $(KDIR) M=$(MODULE_DIR) W=1 modules 2>&1 | tee .w1.log
	$(MAKE) -C $(KDIR) M=$(CRASHME_DIR) clean >/dev/null
	$(MAKE) -C $(KDIR) M=$(CRASHME_DIR) W=1 modules 2>&1 | tee -a .w1.log
	@! grep -E 'warning:|error:' .w1.log || { echo "W=1 build has warnings"; exit 1; }
	@rm -f .w1.log

check: checkpatch w1 lint unit
	$(MAKE) -C tools

# Benchmarks (issue 5) and loss measurements (issue 4): numbers, never assertions.
QUICK ?=
BENCH_ARGS ?=
LOSSBENCH_ARGS ?=
bench: deps
	$(MAKE) all
	$(CLI) --pin $(PIN_NAME) bench -- --kernel $(KERNEL) $(if $(QUICK),--quick) $(BENCH_ARGS)

# Issue 14 item 7: the matrix at each link MTU, one bench run (and results folder) per MTU.
# Every method, and P2PKP also without zero-copy sends (p2pkp-copy: tx_zerocopy=0).
BENCH_MTUS ?= 1500 9000 65520
BENCH_MTU_METHODS ?= p2pkp,p2pkp-copy,p2pkp-key,udp-rw,udp-sendfile,udp-gso,tcp-sendfile
bench-mtu: deps
	$(MAKE) all
	set -e; for m in $(BENCH_MTUS); do \
		$(CLI) --pin $(PIN_NAME) bench -- --kernel $(KERNEL) --mtu $$m --sizes 67108864 \
			--peers 1,3 --methods $(BENCH_MTU_METHODS) $(BENCH_ARGS); \
	done

bench-scale: deps
	$(MAKE) all
	$(CLI) --pin $(PIN_NAME) bench-scale -- --kernel $(KERNEL) $(SCALE_ARGS)

lossbench: deps
	$(MAKE) all
	$(CLI) --pin $(PIN_NAME) lossbench --kernel $(KERNEL) $(LOSSBENCH_ARGS)

clean:
	-[ -f $(KDIR)/Makefile ] && $(MAKE) -C $(KDIR) M=$(CURDIR) clean
	-[ -f $(KDIR)/Makefile ] && $(MAKE) -C $(KDIR) M=$(CURDIR)/vmtests/crashme clean
	-$(MAKE) -C tools clean
	-$(MAKE) -C tools/bench clean
	rm -rf .pytest_cache .mypy_cache .ruff_cache out/*-module out/*-crashme
