# Deployment targets, included by the root Makefile (which defines PY). `make help` lists them.
DEPLOY_OVERLAYS := dev prod
KUBECTL := $(dir $(PY))kubectl

.PHONY: deploy-render
deploy-render: $(STAMP) ## Render every kustomize overlay into var/deploy/<overlay>.yaml
	@mkdir -p var/deploy
	@for overlay in $(DEPLOY_OVERLAYS); do \
		$(KUBECTL) kustomize deploy/overlays/$$overlay > var/deploy/$$overlay.yaml || exit 1; \
		echo "var/deploy/$$overlay.yaml"; \
	done

.PHONY: deploy-check
deploy-check: $(STAMP) ## Render the overlays and validate them offline (Kubernetes, CRD, skaffold schemas; policies; promtool)
	$(PY) deploy/tools/wrap_rules.py --check
	$(PY) -m pytest -q tests/deploy -m "not slow"

.PHONY: deploy-rules
deploy-rules: $(STAMP) ## Regenerate deploy/alerts/prometheusrule.yaml from deploy/alerts/crm.rules.yml
	$(PY) deploy/tools/wrap_rules.py

BACKUP ?=

.PHONY: backup
backup: $(STAMP) ## Back up the running local stack (every database and JetStream stream) into var/backups/<time>
	$(PY) deploy/tools/backup.py backup

.PHONY: restore
restore: $(STAMP) ## Restore into the stopped local stack: make restore BACKUP=var/backups/<time>
	@test -n "$(BACKUP)" || { echo "usage: make restore BACKUP=var/backups/<time>"; exit 2; }
	$(PY) deploy/tools/backup.py restore "$(BACKUP)"
