# The two commands the README promises. Both set up everything they need.
.PHONY: demo test lint

demo:
	@scripts/setup.sh demo
	.venv/bin/clipsearch demo

test:
	@scripts/setup.sh
	@scripts/test.sh

lint:
	@scripts/setup.sh
	.venv/bin/ruff check .
