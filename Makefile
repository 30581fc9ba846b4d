# ShadowMesh — the two commands are `make demo` and `make test` (see README.md).
.PHONY: venv demo test bench lint types vendor clean

venv:
	@bash scripts/bootstrap.sh

demo: venv
	@.venv/bin/python scripts/demo.py

test: venv
	@bash scripts/test.sh $(ARGS)

bench: venv
	@bash bench/run.sh

vendor: venv
	cd frontend && npm ci --ignore-scripts
	.venv/bin/python scripts/vendor.py

lint: venv
	.venv/bin/ruff check .

types: venv
	.venv/bin/mypy

clean:
	rm -rf .venv data .pytest_cache .hypothesis .mypy_cache artifacts
