// Package fleet is the device model shared by every workflow and adapter:
// the inventory record, certificate and device statuses, the sentinel errors
// that ports return, thing-name rules, certificate parsing and validation, and
// the decoders for the events that AWS delivers to the functions.
//
// Ports are declared where they are used (in the workflow packages); this
// package holds only the vocabulary they share, so that an in-memory fake and
// an AWS adapter can satisfy the same port and fail with the same sentinels.
package fleet
