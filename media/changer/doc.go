// Package changer moves tape cartridges inside a library: between storage
// slots, mail (import/export) slots and drives. Changer is the contract;
// its doc comment says how elements are numbered (as mtx numbers them),
// what an inventory holds, and which errors a move can fail with.
//
// Two implementations keep it, and both pass the one suite in changertest:
//
//   - MTX drives a real SCSI library by running the mtx command (Debian
//     package mtx, version 1.3.12) and parsing what it prints. ParseStatus
//     reads `mtx status` as libraries in the field print it; the recorded
//     outputs it is tested on are in testdata/status.
//   - Library is an emulated library (slots, drives, mail slots and a
//     barcode reader) for tests and `cairn dev`. Its state lives in a small
//     JSON file, so it survives a restart. Its drives are DriveSlots: the
//     library tells the emulated tape drive which cartridge it now holds,
//     and asks it to give the cartridge up before taking it out. It can
//     be made to fail the ways real libraries fail: a robot that stops
//     answering, a reader that misreads a barcode, a slot that reports
//     full but is empty.
//
// Import, Export and LoadBarcode do by barcode what the storage node
// needs, on any Changer. A cartridge the library does not hold is
// ErrNotFound; the storage node asks an operator to put it into a mail
// slot and imports it when an inventory shows it there.
package changer
