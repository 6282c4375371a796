// Package changer moves tape cartridges inside a library: between storage
// slots, mail (import/export) slots and drives. Changer is the contract;
// its doc comment says how elements are numbered (as mtx numbers them),
// what an inventory holds, and which errors a move can fail with.
//
// Import, Export and LoadBarcode do by barcode what the storage node
// needs, on any Changer. A cartridge the library does not hold is
// ErrNotFound; the storage node asks an operator to put it into a mail
// slot and imports it when an inventory shows it there.
package changer
