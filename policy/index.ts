import { PolicyPack } from "@pulumi/policy";
import { policies } from "./policies";

// `pulumi preview --policy-pack policy` loads this file; the rules live in policies.ts so tests can import them.
new PolicyPack("hardened-matrix", { policies, enforcementLevel: "mandatory" });
