# remora. The two commands a newcomer runs:
#   make demo   the real thing end to end: MariaDB primary + replica, remora, lag induced and cleared
#   make test   every test, against real MariaDB servers
# Both install missing Debian packages (apt-get, as root), build, and clean up after themselves.

CARGO ?= cargo
LAB := target/debug/remora-lab

# The native lab (`make up`): ports are overridable, e.g. `make up PRIMARY_PORT=13306`.
export PRIMARY_PORT ?= 3306
export REPLICA_PORT ?= 3307
export PRIMARY_AGENT_PORT ?= 9258
export REPLICA_AGENT_PORT ?= 9358
export LAG ?= 300

# The Kubernetes manifests' schema validator (offline: the schemas ship in
# the wheel), in a virtualenv of its own; tests/shipped.rs runs it.
TOOLS_VENV := $(CURDIR)/target/tools-venv
KUBERNETES_VALIDATE := 1.37.0

# What the tests, the demo and the lab run: real servers, from Debian's archive.
DEB_PACKAGES := mariadb-server mariadb-client haproxy percona-toolkit galera-4 netcat-openbsd socat procps systemd openssl prometheus lintian chromium man-db python3-venv docker-compose mmdebstrap libssl-dev pkg-config

# MySQL 9, HAProxy 3 and MariaDB 11, from Debian's archive too (sid), in a
# root filesystem kept outside the clone and reused (lab/sid-root.sh).
export REMORA_SID_ROOT ?= /var/cache/remora-lab/sid

# `make up` and friends drive docker-compose.yml when a Docker engine answers,
# and the same lab natively on loopback otherwise.
DOCKER := $(shell docker info >/dev/null 2>&1 && echo yes)
# With Docker: `make up FLAVOR=percona` runs Percona Server 8.0 instead of MariaDB
# (docker-compose.yml's profiles); the lab targets below work on either.
FLAVOR ?= mariadb
COMPOSE := docker compose --profile $(FLAVOR)
ifeq ($(FLAVOR),percona)
PRIMARY := percona-primary
REPLICA := percona-replica
LAB_SQL := mysql -uroot -psecret
SET_DELAY = STOP REPLICA; CHANGE REPLICATION SOURCE TO SOURCE_DELAY=$(1); START REPLICA
REPLICA_STATUS := SHOW REPLICA STATUS\G
REPLICA_FIELDS := Seconds_Behind_Source|SQL_Delay|Replica_(IO|SQL)_Running:
else ifeq ($(FLAVOR),mariadb)
PRIMARY := primary
REPLICA := replica
LAB_SQL := mariadb -uroot -psecret
SET_DELAY = STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=$(1); START SLAVE
REPLICA_STATUS := SHOW SLAVE STATUS\G
REPLICA_FIELDS := Seconds_Behind_Master|SQL_Delay|Slave_(IO|SQL)_Running:
else
$(error FLAVOR must be mariadb or percona, got $(FLAVOR))
endif

.PHONY: help deps build deb demo test lint bench soak up down status start-lag stop-lag slave-lag stuff

help:
	@sed -n 's/^#   //p' Makefile
	@echo "lab: make up [SERVER=mariadb|mariadb-lts|mysql] [HAPROXY=debian|sid] | down | status | start-lag [LAG=300] | stop-lag | slave-lag | stuff"
	@echo "     (with a Docker engine: make up FLAVOR=percona); make demo takes SERVER and HAPROXY too"
	@echo "make bench   the benchmark (a few minutes); writes benches/BENCHMARKS.md"
	@echo "make soak    ten minutes of lag cycles and faults under 200 checks/s"
	@echo "make deb     the Debian package (target/debian/remora_*.deb)"

deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "missing Debian packages:$$missing"; echo "install them as root: apt-get install$$missing"; exit 1; \
	  fi; \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)"; exit 1; }
	@command -v cargo-deb >/dev/null || { echo "installing cargo-deb (make deb, and its test)"; $(CARGO) install --locked --quiet cargo-deb; }
	@test -x $(TOOLS_VENV)/bin/kubernetes-validate || { echo "installing kubernetes-validate (PyPI) in $(TOOLS_VENV)"; \
	  rm -rf $(TOOLS_VENV) && /usr/bin/python3 -m venv $(TOOLS_VENV) && \
	  $(TOOLS_VENV)/bin/pip install --quiet --disable-pip-version-check kubernetes-validate==$(KUBERNETES_VALIDATE); }
	@./lab/sid-root.sh "$(REMORA_SID_ROOT)"

# The Debian package, in target/debian/: binary, hardened systemd unit,
# /etc/remora/remora.yaml (a conffile), the system user.
deb: deps
	$(CARGO) build --release --bin remora
	./.ci/man target/release/remora target/man
	$(CARGO) deb --no-build

build: deps
	$(CARGO) build --workspace --bins

demo: build
	$(LAB) demo

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Everything remora prints during the tests is kept, then searched for every
# password the tests gave it.
OUTPUT_DIR := $(CURDIR)/target/remora-output

# The tests build the `checked` profile (Cargo.toml): optimized, with debug
# assertions and overflow checks. Plain `cargo test` runs the fast tier
# (unit tests, remora in-process against the MySQL fixture); the tests that
# need real servers or load are #[ignore]d there, saying what they need, and
# run here (--include-ignored), all but the ten-minute soak (`make soak`).
# The scan uses the lab binary they built (`cargo run -p remora-lab` would
# rebuild its dependencies with other features).
test: deps lint
	rm -rf $(OUTPUT_DIR)
	REMORA_OUTPUT_DIR=$(OUTPUT_DIR) $(CARGO) test --workspace --profile checked -- --include-ignored --skip soak_for_ten_minutes
	$(CURDIR)/target/checked/remora-lab check-output $(OUTPUT_DIR)

# Not part of `make test` (which runs two cycles of it): ten minutes of lag
# cycles and faults under 200 checks/s; SOAK_SECONDS=N to change the length.
soak: deps
	$(CARGO) test --profile checked --test soak -- --ignored --nocapture soak_for_ten_minutes

# Not part of `make test`: minutes of load. Writes benches/BENCHMARKS.md
# (the agent's cost, then what readers through HAProxy get) and docs/reads.svg.
bench: deps
	$(CARGO) bench --bench agent
	$(CARGO) bench --bench reads

ifeq ($(DOCKER),yes)
up:
	$(COMPOSE) up -d --build --wait
down:
	$(COMPOSE) down -v
status:
	$(COMPOSE) ps
start-lag:
	$(COMPOSE) exec -T $(REPLICA) $(LAB_SQL) -e "$(call SET_DELAY,$(LAG))"
stop-lag:
	$(COMPOSE) exec -T $(REPLICA) $(LAB_SQL) -e "$(call SET_DELAY,0)"
slave-lag:
	$(COMPOSE) exec -T $(REPLICA) $(LAB_SQL) -e "$(REPLICA_STATUS)" | grep -E "$(REPLICA_FIELDS)"
stuff:
	$(COMPOSE) exec -T $(PRIMARY) $(LAB_SQL) -e "CREATE DATABASE IF NOT EXISTS stuff; \
	  CREATE TABLE stuff.things (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(32)); \
	  INSERT INTO stuff.things (name) VALUES ('a'), ('b'), ('c'); INSERT INTO lab.ticks () VALUES (), (), (); \
	  DROP DATABASE stuff"
else ifneq ($(FLAVOR),mariadb)
up down status start-lag stop-lag slave-lag stuff:
	@echo "FLAVOR=$(FLAVOR) runs in containers and needs a Docker engine (docker info failed); without one, make up runs the MariaDB lab natively" >&2; exit 2
else
up: build
	$(LAB) up

down:
	@if [ -x $(LAB) ]; then $(LAB) down; else echo "nothing to stop (lab never built)"; fi

status start-lag stop-lag slave-lag stuff: build
	$(LAB) $@
endif
