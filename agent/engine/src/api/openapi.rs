//! The OpenAPI 3.1 document served at `/openapi.json`, written by hand next to the handlers.

use serde_json::{Value, json};

use crate::journal::IntentState;

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The OpenAPI 3.1 description of every route of [`super::ROUTES`].
pub fn document(version: &str) -> Value {
    let states: Vec<&str> = IntentState::ALL.iter().map(|s| s.as_str()).collect();
    let unauthorized = error_response("Missing or invalid bearer token");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "treasury agent API",
            "version": version,
            "description": "Status, intents, policies and manual triggers, root approvals waiting, \
                and Prometheus metrics of a treasury agent. Every route but /health needs \
                `Authorization: Bearer TOKEN`; errors are JSON {\"error\": \"...\"}."
        },
        "security": [{ "bearerAuth": [] }],
        "paths": {
            "/health": { "get": {
                "operationId": "health",
                "summary": "Liveness (no token)",
                "security": [],
                "responses": { "200": json_response("The agent answers", json!({
                    "type": "object",
                    "required": ["status", "version"],
                    "properties": { "status": { "const": "ok" }, "version": { "type": "string" } }
                })) }
            } },
            "/openapi.json": { "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": json_response("OpenAPI 3.1 document", json!({ "type": "object" })),
                    "401": unauthorized
                }
            } },
            "/metrics": { "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (OpenMetrics text format 1.0.0)",
                "description": "treasury_intents{state}, treasury_stage_duration_seconds{stage} \
                    (histogram), treasury_last_block, treasury_keeper_balance_wei{keeper}, \
                    treasury_signer_up{node}, treasury_intents_created_total{policy}, \
                    treasury_policy_errors_total{policy}, treasury_notifications_total{webhook,outcome}.",
                "responses": {
                    "200": { "description": "Metrics", "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } },
                    "401": unauthorized,
                    "500": error_response("Journal unreadable")
                }
            } },
            "/v1/status": { "get": {
                "operationId": "status",
                "summary": "Chain, Safe, module, keeper, last block, signers and intents by state",
                "responses": {
                    "200": json_response("Status", reference("Status")),
                    "401": unauthorized,
                    "500": error_response("Journal unreadable")
                }
            } },
            "/v1/intents": { "get": {
                "operationId": "listIntents",
                "summary": "Intents, newest first",
                "parameters": [
                    { "name": "state", "in": "query", "schema": { "type": "string", "enum": states } },
                    { "name": "policy", "in": "query", "schema": { "type": "string" } },
                    { "name": "limit", "in": "query",
                      "schema": { "type": "integer", "minimum": 1, "maximum": super::handlers::MAX_LIMIT, "default": 100 } }
                ],
                "responses": {
                    "200": json_response("Intents", json!({
                        "type": "object",
                        "required": ["intents"],
                        "properties": { "intents": { "type": "array", "items": reference("Intent") } }
                    })),
                    "400": error_response("Unknown state, bad limit or unknown parameter"),
                    "401": unauthorized
                }
            } },
            "/v1/intents/{id}": { "get": {
                "operationId": "showIntent",
                "summary": "One intent with its events, operation and keeper transactions",
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }],
                "responses": {
                    "200": json_response("The intent", json!({
                        "type": "object",
                        "required": ["intent", "events", "operation", "transactions"],
                        "properties": {
                            "intent": reference("Intent"),
                            "events": { "type": "array", "items": reference("IntentEvent") },
                            "operation": { "oneOf": [reference("Operation"), { "type": "null" }] },
                            "transactions": { "type": "array", "items": reference("Transaction") }
                        }
                    })),
                    "400": error_response("The id is not an integer"),
                    "401": unauthorized,
                    "404": error_response("No such intent")
                }
            } },
            "/v1/policies": { "get": {
                "operationId": "listPolicies",
                "summary": "Configured policies and their triggers",
                "responses": {
                    "200": json_response("Policies", json!({
                        "type": "object",
                        "required": ["policies"],
                        "properties": { "policies": { "type": "array", "items": reference("Policy") } }
                    })),
                    "401": unauthorized
                }
            } },
            "/v1/policies/{name}/trigger": { "post": {
                "operationId": "triggerPolicy",
                "summary": "Queue a run of a manual policy; the running agent picks it up",
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": {
                    "202": json_response("Queued", reference("ManualTrigger")),
                    "401": unauthorized,
                    "404": error_response("Unknown policy"),
                    "409": error_response("The policy is not triggered manually")
                }
            } },
            "/v1/approvals": { "get": {
                "operationId": "listApprovals",
                "summary": "Root signer requests waiting for approval, and intents awaiting the root",
                "responses": {
                    "200": json_response("Approvals waiting", json!({
                        "type": "object",
                        "required": ["approvals", "awaiting_root"],
                        "properties": {
                            "approvals": { "type": "array", "items": reference("RootRequest") },
                            "awaiting_root": { "type": "array", "items": reference("Intent") }
                        }
                    })),
                    "401": unauthorized,
                    "503": error_response("Root signer not configured or unreachable")
                }
            } }
        },
        "components": {
            "securitySchemes": { "bearerAuth": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": { "error": { "type": "string" } }
                },
                "IntentState": { "type": "string", "enum": states },
                "Intent": {
                    "type": "object",
                    "required": ["id", "idempotency_key", "policy", "trigger", "kind", "payload", "state", "created_at", "updated_at"],
                    "properties": {
                        "id": { "type": "integer" },
                        "idempotency_key": { "type": "string" },
                        "policy": { "type": "string" },
                        "trigger": { "type": "string", "description": "What fired the policy" },
                        "kind": { "type": "string", "enum": ["pay", "swap", "rebalance", "alert"] },
                        "payload": { "type": "object" },
                        "state": reference("IntentState"),
                        "created_at": { "type": "integer", "description": "Unix milliseconds" },
                        "updated_at": { "type": "integer", "description": "Unix milliseconds" }
                    }
                },
                "IntentEvent": {
                    "type": "object", "required": ["from", "to", "detail", "at"],
                    "properties": {
                        "from": { "oneOf": [reference("IntentState"), { "type": "null" }] },
                        "to": reference("IntentState"),
                        "detail": {},
                        "at": { "type": "integer", "description": "Unix milliseconds" }
                    }
                },
                "Operation": {
                    "type": "object", "required": ["operation_id", "module_nonce", "operation", "intents"],
                    "properties": {
                        "operation_id": { "type": "string" },
                        "module_nonce": { "type": "integer" },
                        "operation": { "type": "object" },
                        "intents": { "type": "array", "items": { "type": "integer" } }
                    }
                },
                "Transaction": {
                    "type": "object", "required": ["tx", "state", "block_number"],
                    "properties": {
                        "tx": {
                            "type": "object",
                            "properties": {
                                "operation_id": { "type": "string" },
                                "module_nonce": { "type": "integer" },
                                "signed_operation": { "type": "object" },
                                "keeper_nonce": { "type": "integer" },
                                "tx_hash": { "type": "string" },
                                "raw_tx": { "type": "string" }
                            }
                        },
                        "state": { "type": "string", "enum": ["signed", "broadcast", "included", "reorged", "replaced", "confirmed", "failed"] },
                        "block_number": { "type": ["integer", "null"] }
                    }
                },
                "Policy": {
                    "type": "object", "required": ["name", "file", "trigger", "period", "manual"],
                    "properties": {
                        "name": { "type": "string" },
                        "file": { "type": "string" },
                        "trigger": {
                            "type": "object", "required": ["kind"],
                            "properties": { "kind": { "type": "string", "enum": ["schedule", "every_blocks", "on_log", "manual"] } }
                        },
                        "period": { "type": "string", "enum": ["block", "day", "week", "month"] },
                        "manual": { "type": "boolean" }
                    }
                },
                "ManualTrigger": {
                    "type": "object", "required": ["id", "policy", "requested_by", "requested_at"],
                    "properties": {
                        "id": { "type": "integer" },
                        "policy": { "type": "string" },
                        "requested_by": { "type": "string" },
                        "requested_at": { "type": "integer", "description": "Unix milliseconds" },
                        "handled_at": { "type": ["integer", "null"] },
                        "outcome": { "type": ["string", "null"] }
                    }
                },
                "RootRequest": {
                    "type": "object", "required": ["id", "state", "digest", "requester", "created_at", "expires_at"],
                    "description": "A request of the root signing service (see `treasury root show`)",
                    "properties": {
                        "id": { "type": "string" },
                        "state": { "type": "string", "enum": ["pending", "approved", "signed", "rejected", "expired"] },
                        "digest": { "type": "string" },
                        "requester": { "type": "string" },
                        "request": { "type": "object" },
                        "created_at": { "type": "integer", "description": "Unix seconds" },
                        "expires_at": { "type": "integer", "description": "Unix seconds" }
                    }
                },
                "Status": {
                    "type": "object",
                    "required": ["chain_id", "safe", "module", "keeper", "version", "uptime_secs", "last_block",
                                 "keeper_balance_wei", "signers", "root_configured", "intents", "open_manual_triggers"],
                    "properties": {
                        "chain_id": { "type": "integer" },
                        "safe": { "type": "string" },
                        "module": { "type": "string" },
                        "keeper": { "type": "string" },
                        "version": { "type": "string" },
                        "uptime_secs": { "type": "integer" },
                        "last_block": { "type": ["integer", "null"] },
                        "keeper_balance_wei": { "type": ["string", "null"], "description": "Decimal string" },
                        "signers": { "type": "object", "additionalProperties": { "type": "boolean" } },
                        "root_configured": { "type": "boolean" },
                        "intents": {
                            "type": "object", "description": "Intents by state (every state present)",
                            "additionalProperties": { "type": "integer" }
                        },
                        "open_manual_triggers": { "type": "integer" }
                    }
                }
            }
        }
    })
}
